"""Valuable localization region (LD paper, Sec. 3.3, Algorithm 1), vectorised over the batch.

For every GT j: ``alpha_pos(j)`` is the positive threshold of the ATSS label assignment (mean
+ std of the IoUs of its ``topk``-closest priors per level), and the VLR is the set of priors
``i`` with ``gamma * alpha_pos(j) <= DIoU(prior_i, gt_j) <= alpha_pos(j)`` (both bounds
inclusive), the student's positives included: Algorithm 1 does not remove them, and neither
does the published code. Everything is a tensor op over ``[B, N, G]`` (GT lists padded), on
the tensors' device: no Python loop over GTs or priors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distill.regions.base import RegionContext


def iou_and_diou(priors: Tensor, gts: Tensor) -> tuple[Tensor, Tensor]:
    """IoU and DIoU (Zheng et al., AAAI 2020) between every prior and every GT.

    Args:
        priors (Tensor[N, 4]): Boxes (x1, y1, x2, y2).
        gts (Tensor[B, G, 4]): GT boxes of each image.

    Returns:
        tuple: ``iou (Tensor[B, N, G])`` and ``diou (Tensor[B, N, G])`` =
        IoU - (centre distance)^2 / (diagonal of the smallest enclosing box)^2.
    """
    # one coordinate at a time: every operation writes a contiguous [B, N, G] tensor (slicing
    # [B, N, G, 2] views made each op strided: 4-5x slower at the tiny configs' shapes); the
    # arithmetic, and so every value, is the same
    px1, py1, px2, py2 = (c[None, :, None] for c in priors.unbind(-1))  # [1, N, 1]
    gx1, gy1, gx2, gy2 = (c[:, None, :] for c in gts.unbind(-1))  # [B, 1, G]
    eps = torch.finfo(priors.dtype).eps
    inter = (torch.min(px2, gx2) - torch.max(px1, gx1)).clamp_(min=0)
    inter.mul_((torch.min(py2, gy2) - torch.max(py1, gy1)).clamp_(min=0))
    area_p = (px2 - px1) * (py2 - py1)
    area_g = (gx2 - gx1) * (gy2 - gy1)
    iou = inter / (area_p + area_g - inter).clamp_(min=eps)
    dx = ((px1 + px2) - (gx1 + gx2)).div_(2)
    dy = ((py1 + py2) - (gy1 + gy2)).div_(2)
    ex = torch.max(px2, gx2) - torch.min(px1, gx1)
    ey = torch.max(py2, gy2) - torch.min(py1, gy1)
    diou = iou - (dx.square_() + dy.square_()) / (ex.square_() + ey.square_()).clamp_(min=eps)
    return iou, diou


def atss_thresholds(priors: Tensor, num_level_priors: list[int], gts: Tensor, iou: Tensor,
                    topk: int = 9) -> Tensor:
    """ATSS's adaptive positive IoU threshold of every GT (Zhang et al., CVPR 2020).

    Candidates: on each level the ``min(topk, N_l)`` priors whose centres are closest to the
    GT centre; threshold: mean + std (unbiased, as mmdet's ``ATSSAssigner``) of their IoUs.

    Args:
        priors (Tensor[N, 4]): Priors of all levels, level-major.
        num_level_priors (list[int]): ``N_l`` of each level.
        gts (Tensor[B, G, 4]): GT boxes.
        iou (Tensor[B, N, G]): IoU of every prior with every GT.
        topk (int): Candidates per level.

    Returns:
        Tensor[B, G]: ``alpha_pos`` of each GT.
    """
    pc = (priors[:, :2] + priors[:, 2:]) / 2
    gc = (gts[..., :2] + gts[..., 2:]) / 2
    dist = (pc[None, :, None, 0] - gc[:, None, :, 0]).square_()  # [B, N, G], squared
    dist += (pc[None, :, None, 1] - gc[:, None, :, 1]).square_()
    cand = []
    start = 0
    for n in num_level_priors:  # a loop over the (3-5) levels only
        k = min(topk, n)
        idx = dist[:, start:start + n].topk(k, dim=1, largest=False).indices
        cand.append(torch.gather(iou[:, start:start + n], 1, idx))
        start += n
    cand = torch.cat(cand, dim=1)  # [B, K, G]
    return cand.mean(1) + cand.std(1)


def vlr_mask(priors: Tensor, num_level_priors: list[int], gts: Tensor, valid: Tensor,
             gamma: float = 0.25, topk: int = 9, pos_mask: Tensor | None = None
             ) -> tuple[Tensor, Tensor]:
    """Algorithm 1 of the LD paper for a batch.

    Args:
        priors (Tensor[N, 4]): Prior boxes of all levels.
        num_level_priors (list[int]): Priors per level.
        gts (Tensor[B, G, 4]): GT boxes (padded).
        valid (Tensor[B, G]): Which GT entries are real.
        gamma (float): Lower bound factor, ``alpha_vl = gamma * alpha_pos`` (paper: 0.25).
        topk (int): ATSS candidates per level (for ``alpha_pos``).
        pos_mask (Tensor[B, N], optional): Priors to leave out of the VLR (a departure from
            Algorithm 1, whose VLR keeps the positives; None: the paper).

    Returns:
        tuple: ``mask (Tensor[B, N] bool)`` and ``iou (Tensor[B, N])``: the largest IoU with a
        GT whose band contains the prior (0 outside the VLR; the published code's weight).
    """
    b, n = gts.shape[0], priors.shape[0]
    if gts.shape[1] == 0:
        empty = torch.zeros(b, n, dtype=torch.bool, device=priors.device)
        return empty, priors.new_zeros(b, n)
    iou, diou = iou_and_diou(priors, gts)
    alpha = atss_thresholds(priors, num_level_priors, gts, iou, topk)[:, None, :]  # [B, 1, G]
    # Algorithm 1, line 3: alpha_vl <= DIoU <= alpha_pos, both inclusive.
    band = (diou >= gamma * alpha) & (diou <= alpha) & valid[:, None, :]
    mask = band.any(-1)
    if pos_mask is not None:
        mask = mask & ~pos_mask.bool()
    best_iou = (iou * band).amax(-1) * mask
    return mask, best_iou


class VLRRegion:
    """The valuable localization region (LD paper, Algorithm 1 and Eq. 5's mask ``I_VL``).

    The defaults are the paper's: an indicator mask (``I_VL`` in {0, 1}), positives included,
    ``gamma = 0.25``. The other settings are named departures (docs/methods.md, "LD and VLR:
    departures from the paper"):
    ``weight='iou'`` is the published code's weight, ``exclude_positives=True`` an option of
    this toolkit's first version.

    Args:
        gamma (float): ``alpha_vl = gamma * alpha_pos`` (paper: 0.25).
        topk (int): ATSS candidates per level, as the student's assigner (9).
        weight (str): ``'ones'`` (default, the paper's indicator), ``'iou'`` (the published
            code: each VLR prior weighted by its IoU with the GT) or ``'score'`` (the
            student's detached max class probability; near 0 at non-positive priors, where
            QFL drives it down, so it all but switches VLR LD off).
        exclude_positives (bool): Leave out the student's positives (the main region).
            Default False, as Algorithm 1 and the published code.
    """

    #: ATSS thresholds need the student head's prior boxes (and its positives or scores with
    #: those options): refused on a detector without a dense head (``distill.graph.nodes``).
    needs = ('priors', 'pos_mask', 'student_cls')

    def __init__(self, gamma: float = 0.25, topk: int = 9, weight: str = 'ones',
                 exclude_positives: bool = False):
        if not 0 <= gamma <= 1:
            raise ValueError(f'VLRRegion gamma must be in [0, 1], got {gamma}')
        if weight not in ('ones', 'iou', 'score'):
            raise ValueError(f"VLRRegion weight must be 'ones', 'iou' or 'score', got {weight!r}")
        self.gamma, self.topk, self.weight = gamma, topk, weight
        self.exclude_positives = exclude_positives

    def __call__(self, ctx: RegionContext) -> Tensor:
        """Tensor[B, N] weights."""
        gts, valid = ctx.padded_gts()
        pos = ctx.require('pos_mask', 'VLRRegion') if self.exclude_positives else None
        mask, iou = vlr_mask(ctx.flat_priors, ctx.num_level_priors, gts, valid,
                             self.gamma, self.topk, pos)
        if self.weight == 'iou':
            return iou
        if self.weight == 'score':
            return mask * ctx.student_score('VLRRegion')
        return mask.to(iou.dtype)

    def __repr__(self) -> str:
        return (f'VLRRegion(gamma={self.gamma}, topk={self.topk}, weight={self.weight!r}, '
                f'exclude_positives={self.exclude_positives})')


def _register():
    from mmrazor.registry import TASK_UTILS
    TASK_UTILS.register_module(module=VLRRegion)


_register()
