"""DDOD's label assigner (Chen et al., ACM MM 2021, Sec. 4.1, Eq. 1): an ATSS-style assignment
on a cost built from the (detached) predictions, one instance for classification and one for
regression with different ``alpha``.

Cost of prior ``i`` for GT ``j``: ``C_ij = sigmoid(s_i[c_j])^(1 - alpha) * IoU(b_i, g_j)^alpha``
with ``s_i`` the class logits and ``b_i`` the decoded box predicted at ``i``. Per GT, the
candidates on each FPN level are the ``topk`` priors of largest cost among those whose centres
fall inside the GT box (``candidates='cost'``, the paper's text) or, as ATSS, the ``topk``
priors whose centres are nearest the GT centre (``candidates='distance'``, what the published
code and mmdet's ``ATSSAssigner(alpha=...)`` do). A candidate is positive when its cost reaches
the GT's adaptive threshold, the mean + std of its candidates' costs, and its centre lies inside
the GT; a prior claimed by several GTs goes to the one of largest cost.
"""

from __future__ import annotations

import torch
from mmdet.models.task_modules.assigners import AssignResult, BaseAssigner
from mmdet.registry import TASK_UTILS
from mmdet.structures.bbox import bbox_overlaps
from mmengine.structures import InstanceData
from torch import Tensor

from .aps_assigner import inside_boxes

CANDIDATES = ('cost', 'distance')


def _centres(boxes: Tensor) -> Tensor:
    return (boxes[:, :2] + boxes[:, 2:4]) / 2


def masked_mean_std(values: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased std over dim 0 of the valid entries (std 0 with fewer than 2).

    Args:
        values, valid (Tensor[K, G]).

    Returns:
        tuple: ``mean (Tensor[G])`` and ``std (Tensor[G])``.
    """
    w = valid.to(values.dtype)
    n = w.sum(0)
    mean = (values * w).sum(0) / n.clamp(min=1)
    var = ((values - mean).square() * w).sum(0) / (n - 1).clamp(min=1)
    return mean, var.sqrt()


@TASK_UTILS.register_module()
class DDODAssigner(BaseAssigner):
    """DDOD's cost-based ATSS assignment (paper Sec. 4.1).

    Args:
        alpha (float): Weight of the IoU in the cost (paper: 0.8 for classification, 0.5 for
            regression, Table 5).
        topk (int): Candidates per level (ATSS: 9).
        candidates (str): ``'cost'`` (default, the paper) or ``'distance'`` (ATSS's centre
            distance, the published code and mmdet).
    """

    def __init__(self, alpha: float, topk: int = 9, candidates: str = 'cost'):
        if not 0 <= alpha <= 1:
            raise ValueError(f'DDODAssigner alpha must be in [0, 1], got {alpha}')
        if candidates not in CANDIDATES:
            raise ValueError(f'DDODAssigner candidates must be one of {CANDIDATES}, got '
                             f'{candidates!r}')
        self.alpha, self.topk, self.candidates = alpha, topk, candidates

    def cost(self, scores: Tensor, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor) -> Tensor:
        """Eq. 1's matching quality ``C`` (Tensor[N, G]) from detached predictions."""
        cls = scores.detach()[:, gt_labels].sigmoid()
        iou = bbox_overlaps(boxes.detach(), gt_boxes)
        return cls.pow(1 - self.alpha) * iou.pow(self.alpha)

    def assign(self, pred_instances: InstanceData, num_level_priors: list[int],
               gt_instances: InstanceData, gt_instances_ignore=None, **kwargs) -> AssignResult:
        """Assign GTs to priors.

        Args:
            pred_instances (InstanceData): ``priors (Tensor[N, 4])``, ``scores (Tensor[N, C])``
                (class logits), ``bboxes (Tensor[N, 4])`` (decoded predictions).
            num_level_priors (list[int]): Priors per level.
            gt_instances (InstanceData): ``bboxes (Tensor[G, 4])``, ``labels (Tensor[G])``.

        Returns:
            AssignResult: ``gt_inds`` (0: background, j + 1: GT j), ``max_overlaps`` (the
            cost), ``labels``.
        """
        priors = pred_instances.priors[:, :4]
        gts, labels = gt_instances.bboxes, gt_instances.labels
        n, g = len(priors), len(gts)
        gt_inds = priors.new_zeros(n, dtype=torch.long)
        if g == 0 or n == 0:
            return AssignResult(g, gt_inds, priors.new_zeros(n),
                                labels=gt_inds.new_full((n,), -1))
        with torch.no_grad():
            cost = self.cost(pred_instances.scores, pred_instances.bboxes, gts, labels)
            centres = _centres(priors)
            inside = inside_boxes(centres, gts, eps=0.01).T  # [N, G]
            if self.candidates == 'cost':
                rank = cost.masked_fill(~inside, -1.0)  # cost is in [0, 1]
                largest = True
            else:
                rank = (centres[:, None, :] - _centres(gts)[None]).square().sum(-1)
                largest = False
            idx, start = [], 0
            for n_l in num_level_priors:  # a loop over the (3-5) levels only
                k = min(self.topk, n_l)
                idx.append(rank[start:start + n_l].topk(k, 0, largest=largest).indices + start)
                start += n_l
            idx = torch.cat(idx)  # [K, G]
            cand_cost = cost.gather(0, idx)
            cand_inside = inside.gather(0, idx)
            valid = cand_inside if self.candidates == 'cost' else torch.ones_like(cand_inside)
            mean, std = masked_mean_std(cand_cost, valid)
            pos = valid & cand_inside & (cand_cost >= (mean + std)[None])
            best = cost.new_full((n, g), -1.0)
            best.scatter_(0, idx, torch.where(pos, cand_cost, cost.new_tensor(-1.0)))
            max_cost, argmax = best.max(1)
            assigned = max_cost >= 0
            gt_inds[assigned] = argmax[assigned] + 1
            out_labels = gt_inds.new_full((n,), -1)
            out_labels[assigned] = labels[argmax[assigned]]
        return AssignResult(g, gt_inds, max_cost.clamp(min=0), labels=out_labels)
