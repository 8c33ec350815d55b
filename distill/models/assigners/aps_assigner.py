"""MOD's Aligned Points Sampler (Hao et al., Pattern Recognition Letters 2022, Sec. 3.2, Eq. 3-8),
for all GTs of a batch at once on the predictions' device.

Per GT (paper Sec. 3.2.1): every location inside the GT box is scored with the losses it would
have as a positive of that GT, ``L_cls`` (the head's classification loss over the classes with
the GT's class as target: sigmoid focal loss, or GFL's QFL with ``cls_loss='qfl'``) and
``L_reg`` (GIoU loss of the box predicted there), each with the head's loss weight; on each
level the ``topk`` locations of lowest ``L_cls + L_reg`` are the candidates (Eq. 3-4; Eq. 3
writes ``max(K, n)`` but "top-K" needs ``min(K, n)``); the ``num_levels`` levels of lowest mean
candidate loss keep theirs (Eq. 5). Sec. 3.2.2: each candidate's score ``S = sqrt(S_u * S_m)``
(Eq. 6-8, :func:`aps_scores`), a two-component GMM on the GT's scores (:func:`gmm_split`,
initialised at the min/max score as the paper says) and the low component are its positives. A
location that is a positive of several GTs goes to the one with the lowest ``L_cls + L_reg``
(the paper does not say; PAA does the same).

Everything is a tensor op over ``[B, G, N]`` (GT lists padded): no loop over GTs and no copy to
the host; the published code fits scikit-learn's GMM on the CPU once per GT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmdet.models.task_modules.assigners import AssignResult, BaseAssigner
from mmdet.registry import TASK_UTILS
from mmdet.structures.bbox import bbox_overlaps
from mmengine.structures import InstanceData
from torch import Tensor

from distill.ops.focal_neg_sum import focal_neg_sum, focal_neg_sum_reference

from .aps_scores import aps_scores
from .batched_gmm import gmm_split


def _focal_neg(x: Tensor, gamma: float, alpha: float) -> Tensor:
    """``(1 - alpha) p^gamma (-log(1 - p))``, ``-log(1 - p) = softplus(x)``."""
    return x.sigmoid().pow_(gamma).mul_(F.softplus(x)).mul_(1 - alpha)


def _focal_pos(x: Tensor, gamma: float, alpha: float) -> Tensor:
    """``alpha (1 - p)^gamma (-log p)``, ``-log p = softplus(-x)``."""
    return (-x).sigmoid().pow_(gamma).mul_(F.softplus(-x)).mul_(alpha)


def focal_as_positive(logits: Tensor, labels: Tensor, gamma: float = 2.0,
                      alpha: float = 0.25) -> Tensor:
    """Sigmoid focal loss of each location as a positive of each GT, summed over classes.

    ``sum_c FL_neg(x_c) - FL_neg(x_y) + FL_pos(x_y)``: computed without a ``[G, N, C]`` tensor.

    Args:
        logits (Tensor[B, N, C]): Class logits.
        labels (Tensor[B, G]): GT classes (padding: any valid class).

    Returns:
        Tensor[B, G, N].
    """
    neg_sum = focal_neg_sum_reference(logits, gamma, alpha)  # [B, N]
    own = logits.gather(2, labels[:, None, :].expand(-1, logits.shape[1], -1))  # [B, N, G]
    return (neg_sum[..., None] - _focal_neg(own, gamma, alpha)
            + _focal_pos(own, gamma, alpha)).transpose(1, 2)


def giou_loss(boxes: Tensor, gts: Tensor) -> Tensor:
    """``1 - GIoU`` elementwise over broadcast leading dims.

    Args:
        boxes (Tensor[..., 4]), gts (Tensor[..., 4]): ``(x1, y1, x2, y2)``, broadcastable.

    Returns:
        Tensor[...].
    """
    bx1, by1, bx2, by2 = boxes.unbind(-1)
    gx1, gy1, gx2, gy2 = gts.unbind(-1)
    eps = torch.finfo(boxes.dtype).eps
    inter = (torch.minimum(bx2, gx2) - torch.maximum(bx1, gx1)).clamp_(min=0)
    inter.mul_((torch.minimum(by2, gy2) - torch.maximum(by1, gy1)).clamp_(min=0))
    union = ((bx2 - bx1) * (by2 - by1) + (gx2 - gx1) * (gy2 - gy1)).sub_(inter).clamp_(min=eps)
    enclose = torch.maximum(bx2, gx2) - torch.minimum(bx1, gx1)
    enclose.mul_(torch.maximum(by2, gy2) - torch.minimum(by1, gy1)).clamp_(min=eps)
    # 1 - GIoU = 1 - inter / union + (enclose - union) / enclose
    return 2 - inter.div_(union) - union.div_(enclose)


def giou_loss_pairs(boxes: Tensor, gts: Tensor) -> Tensor:
    """``1 - GIoU`` of every predicted box with every GT of its image.

    Args:
        boxes (Tensor[B, N, 4]), gts (Tensor[B, G, 4]).

    Returns:
        Tensor[B, G, N].
    """
    return giou_loss(boxes[:, None], gts[:, :, None])


def inside_boxes(points: Tensor, boxes: Tensor, eps: float = 0.0) -> Tensor:
    """Tensor[..., G, N] bool: the location lies inside the box, more than ``eps`` from each
    side (ATSS and DDOD use 0.01; APS 0: strictly inside).

    Args:
        points (Tensor[N, 2]), boxes (Tensor[..., G, 4]).
    """
    x, y = points[:, 0], points[:, 1]
    if eps == 0:
        # x - b > 0 exactly when x > b (IEEE subtraction of two finite floats is 0 only when
        # they are equal), so compare directly: no [..., G, N] differences, and in place
        out = x > boxes[..., 0:1]
        out &= x < boxes[..., 2:3]
        out &= y > boxes[..., 1:2]
        return out.__iand__(y < boxes[..., 3:4])
    return ((x - boxes[..., 0:1] > eps) & (boxes[..., 2:3] - x > eps)
            & (y - boxes[..., 1:2] > eps) & (boxes[..., 3:4] - y > eps))


class APSAssigner(BaseAssigner):
    """The Aligned Points Sampler (see the module docstring).

    Args:
        topk (int): Candidates per level, K (paper: 9).
        num_levels (int): Levels kept per GT (paper: 2).
        cls_weight (float): Weight of ``L_cls`` (the head's classification loss weight).
        reg_weight (float): Weight of ``L_reg`` (the head's box loss weight).
        gamma (float): Focal loss gamma (the head's; QFL's beta).
        alpha (float): Focal loss alpha (the head's; unused by QFL).
        cls_loss (str): ``L_cls`` as the head's own classification loss: ``'focal'`` (sigmoid
            focal loss, FCOS / ATSS / MOD) or ``'qfl'`` (GFL's Quality Focal Loss, GFL Eq. 5:
            the GT class's soft target is the IoU of the box predicted there with the GT).
        gmm_iters (int): EM iterations at most (scikit-learn's default, 100).
        gmm_tol (float): EM tolerance (scikit-learn's default, 1e-3).
    """

    def __init__(self, topk: int = 9, num_levels: int = 2, cls_weight: float = 1.0,
                 reg_weight: float = 1.0, gamma: float = 2.0, alpha: float = 0.25,
                 gmm_iters: int = 100, gmm_tol: float = 1e-3, cls_loss: str = 'focal'):
        if cls_loss not in ('focal', 'qfl'):
            raise ValueError(f"APSAssigner cls_loss must be 'focal' or 'qfl', got {cls_loss!r}")
        self.cls_loss = cls_loss
        if topk < 1 or num_levels < 1:
            raise ValueError(f'APSAssigner needs topk >= 1 and num_levels >= 1, got '
                             f'topk={topk}, num_levels={num_levels}')
        self.topk, self.num_levels = topk, num_levels
        self.cls_weight, self.reg_weight = cls_weight, reg_weight
        self.gamma, self.alpha = gamma, alpha
        self.gmm_iters, self.gmm_tol = gmm_iters, gmm_tol

    def losses(self, logits: Tensor, boxes: Tensor, gts: Tensor, labels: Tensor
               ) -> tuple[Tensor, Tensor]:
        """``L_cls`` and ``L_reg`` (Tensor[B, G, N]) of every location as a positive of every
        GT, from detached predictions."""
        if self.cls_loss == 'qfl':  # the soft target differs per pair: every pair at once
            b, g, n = len(logits), gts.shape[1], logits.shape[1]
            pairs = torch.meshgrid(*(torch.arange(k, device=logits.device) for k in (b, g, n)),
                                   indexing='ij')
            l_cls, l_reg = self.pair_losses(logits, boxes, gts, labels,
                                            tuple(p.reshape(-1) for p in pairs))
            return l_cls.view(b, g, n), l_reg.view(b, g, n)
        l_cls = focal_as_positive(logits.detach().float(), labels, self.gamma, self.alpha)
        l_reg = giou_loss_pairs(boxes.detach().float(), gts.float())
        return self.cls_weight * l_cls, self.reg_weight * l_reg

    def _neg(self, x: Tensor) -> Tensor:
        """A class's loss as a negative: focal, or QFL with target 0 (``p^beta softplus(x)``)."""
        return _focal_neg(x, self.gamma, self.alpha if self.cls_loss == 'focal' else 0.0)

    def negative_sums(self, logits: Tensor, where: Tensor | None = None) -> Tensor:
        """Tensor[B, N]: each location's focal loss summed over the classes as a negative
        (computed only ``where`` given, Tensor[B, N] bool; 0 elsewhere): the dominant cost of
        APS at 80 classes, so it runs on the compiled kernel where built
        (:func:`~distill.ops.focal_neg_sum.focal_neg_sum`)."""
        logits = logits.detach().float()
        alpha = self.alpha if self.cls_loss == 'focal' else 0.0
        if where is None:
            return focal_neg_sum(logits, self.gamma, alpha)
        loc = where.nonzero(as_tuple=True)
        if 2 * len(loc[0]) > where.numel():
            # most locations needed (large GTs): all of them, without the gather of rows
            return focal_neg_sum(logits, self.gamma, alpha).masked_fill_(~where, 0)
        out = logits.new_zeros(where.shape)
        return out.index_put_(loc, focal_neg_sum(logits[loc], self.gamma, alpha))

    def pair_losses(self, logits: Tensor, boxes: Tensor, gts: Tensor, labels: Tensor,
                    pairs: tuple[Tensor, Tensor, Tensor], neg_sum: Tensor | None = None
                    ) -> tuple[Tensor, Tensor]:
        """:meth:`losses` at the pairs ``(image, GT, location)`` only (the same values).

        Args:
            neg_sum (Tensor[B, N], optional): :meth:`negative_sums`, if already computed.

        Returns:
            tuple: ``L_cls`` and ``L_reg``, each of the pair indices' shape (``Tensor[P]``
            for flat pairs).
        """
        bi, gi, ni = pairs
        n, c = logits.shape[1:]
        # flat indices, one index_select per tensor (multi-dimensional advanced indexing was
        # the largest single cost of the batch; index_select gathers 20k rows 2.5-3x faster
        # than a 1-D advanced index, measured)
        loc, gt = (bi * n + ni).reshape(-1), (bi * gts.shape[1] + gi).reshape(-1)
        shape = bi.shape
        cls = labels.reshape(-1).index_select(0, gt)
        own = logits.detach().float().reshape(-1).index_select(0, loc * c + cls)
        if neg_sum is None:
            neg_sum = self.negative_sums(logits)
        pair_boxes = boxes.detach().float().reshape(-1, 4).index_select(0, loc)
        pair_gts = gts.float().reshape(-1, 4).index_select(0, gt)
        if self.cls_loss == 'focal':
            pos = _focal_pos(own, self.gamma, self.alpha)
        else:  # QFL (GFL Eq. 5) with the predicted box's IoU as the target, as GFL trains
            y = bbox_overlaps(pair_boxes, pair_gts, is_aligned=True)
            pos = ((y - own.sigmoid()).abs().pow(self.gamma)
                   * F.binary_cross_entropy_with_logits(own, y, reduction='none'))
        l_cls = neg_sum.reshape(-1).index_select(0, loc) - self._neg(own) + pos
        l_reg = giou_loss(pair_boxes, pair_gts)
        return (self.cls_weight * l_cls).view(shape), (self.reg_weight * l_reg).view(shape)

    @torch.no_grad()
    def assign_batch(self, points: Tensor, num_level_points: list[int], logits: Tensor,
                     boxes: Tensor, gts: Tensor, labels: Tensor, valid: Tensor
                     ) -> tuple[Tensor, Tensor]:
        """Positives of a batch.

        Args:
            points (Tensor[N, 2]): Locations (pixels), levels concatenated.
            num_level_points (list[int]): Locations per level.
            logits (Tensor[B, N, C]): Class logits.
            boxes (Tensor[B, N, 4]): Decoded predicted boxes.
            gts (Tensor[B, G, 4]): GT boxes (padded).
            labels (Tensor[B, G]): GT classes (padding: any valid class).
            valid (Tensor[B, G]): Which GT entries are real.

        Returns:
            tuple: ``gt_index (Tensor[B, N])``: the GT a location is a positive of, -1 for a
            negative; ``positives (Tensor[B, G, N] bool)`` before the conflicts are resolved.
        """
        b, n = logits.shape[:2]
        g = gts.shape[1]
        # once here rather than in every flat gather below (a head's flattened levels are a
        # transposed view)
        logits = logits.detach().float().contiguous()
        boxes = boxes.detach().float().contiguous()
        if g == 0 or n == 0:
            empty = torch.zeros(b, g, n, dtype=torch.bool, device=logits.device)
            return logits.new_full((b, n), -1, dtype=torch.long), empty
        inside = inside_boxes(points, gts) & valid[..., None]  # [B, G, N]
        # the losses only where a location lies inside a GT (a few % of the pairs); the one
        # host sync of the batch (nonzero) sizes them
        pairs = inside.nonzero(as_tuple=True)
        neg_sum = self.negative_sums(logits, inside.any(1))  # (locations inside some GT)
        p_cls, p_reg = self.pair_losses(logits, boxes, gts, labels, pairs, neg_sum)
        total = p_cls.new_full((b, g, n), float('inf')).index_put_(pairs, p_cls + p_reg)
        # Eq. 3-4: the topk lowest combined losses inside the GT, per level; a level with
        # fewer than topk locations inside is padded with inf (no candidate)
        vals, idx, start = [], [], 0
        for n_l in num_level_points:  # a loop over the (3-5) levels only
            k = min(self.topk, n_l)
            val, i = total[..., start:start + n_l].topk(k, -1, largest=False)
            if k < self.topk:  # every level gives topk slots, so levels stack
                val = F.pad(val, (0, self.topk - k), value=float('inf'))
                i = F.pad(i, (0, self.topk - k))
            vals.append(val)
            idx.append(i + start)
            start += n_l
        vals, idx = torch.stack(vals, 2), torch.stack(idx, 2)  # [B, G, L, K]
        ok = torch.isfinite(vals)
        cnt = ok.sum(-1)
        means = torch.where(cnt > 0, torch.where(ok, vals, 0).sum(-1) / cnt.clamp(min=1),
                            vals.new_tensor(float('inf')))  # [B, G, L]
        idx = torch.where(ok, idx, -1)  # -1: no candidate
        # Eq. 5: the num_levels levels of lowest mean candidate loss
        keep = min(self.num_levels, len(num_level_points))
        levels = means.topk(keep, -1, largest=False).indices  # [B, G, keep]
        cand = idx.gather(2, levels[..., None].expand(-1, -1, -1, self.topk)).flatten(2)
        ok = cand >= 0
        safe = cand.clamp(min=0)
        # Eq. 6-8 and the GMM, every GT of the batch at once (the two losses recomputed at
        # the <= 2K candidates of each GT)
        cb = torch.arange(b, device=cand.device)[:, None, None].expand_as(cand)
        cg = torch.arange(g, device=cand.device)[None, :, None].expand_as(cand)
        c_cls, c_reg = self.pair_losses(logits, boxes, gts, labels, (cb, cg, safe), neg_sum)
        s = aps_scores(c_cls, c_reg, ok)
        pos_c = gmm_split(s.flatten(0, 1), ok.flatten(0, 1), max_iter=self.gmm_iters,
                          tol=self.gmm_tol).view_as(ok)
        # invalid slots write into a spare column n, so no real location is written twice
        slot = torch.where(ok, cand, n)
        positives = inside.new_zeros(b, g, n + 1).scatter_(2, slot, pos_c)[..., :n]
        # a location claimed by several GTs: the lowest combined loss (then the lowest GT
        # index), resolved over the positives only
        where = (cb * n + safe)[pos_c]
        cost, owner = (c_cls + c_reg)[pos_c], cg[pos_c]
        best = cost.new_full((b * n,), float('inf')).scatter_reduce_(0, where, cost, 'amin')
        win = cost == best[where]
        gt_index = owner.new_full((b * n,), g).scatter_reduce_(0, where[win], owner[win], 'amin')
        return torch.where(gt_index < g, gt_index, -1).view(b, n), positives

    def assign(self, pred_instances: InstanceData, num_level_priors: list[int],
               gt_instances: InstanceData, gt_instances_ignore=None, **kwargs) -> AssignResult:
        """mmdet's interface, one image: ``pred_instances`` has ``priors (Tensor[N, 2+])``,
        ``scores (Tensor[N, C])`` (logits) and ``bboxes (Tensor[N, 4])``."""
        gts, labels = gt_instances.bboxes, gt_instances.labels
        n = len(pred_instances.priors)
        gt_index, _ = self.assign_batch(
            pred_instances.priors[:, :2], num_level_priors, pred_instances.scores[None],
            pred_instances.bboxes[None], gts[None], labels[None],
            torch.ones(1, len(gts), dtype=torch.bool, device=gts.device))
        gt_index = gt_index[0]
        out_labels = gt_index.new_full((n,), -1)
        pos = gt_index >= 0
        out_labels[pos] = labels[gt_index[pos]]
        return AssignResult(len(gts), gt_index + 1, pred_instances.priors.new_zeros(n),
                            labels=out_labels)


TASK_UTILS.register_module(module=APSAssigner)
