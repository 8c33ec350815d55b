"""FGD's foreground: each location's scale-normalised GT-box weight (Yang et al., CVPR 2022)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from distill.regions.base import RegionContext

#: The FPN strides of GFL, RetinaNet, ATSS and FCOS in mmdet (P3-P7); a neck with fewer
#: levels uses the first ones (the tiny configs: P3-P5, strides 8-32).
FPN_STRIDES = (8, 16, 32, 64, 128)


def prior_cells(priors: Tensor, stride: float) -> tuple[Tensor, Tensor]:
    """The grid cell (column, row) of each prior of one level.

    Args:
        priors (Tensor[N_l, 4]): Prior boxes (x1, y1, x2, y2) of the level (the ``A`` priors of a
            location share its cell).
        stride (float): The level's stride.

    Returns:
        tuple: ``col (Tensor[N_l])`` and ``row (Tensor[N_l])``, ``floor(centre / stride +
        0.25)``: the cell index for mmdet's centre offsets 0 (anchors) and 0.5 (points), safe
        from the rounding of ``(x1 + x2) / 2``.
    """
    cx = (priors[:, 0] + priors[:, 2]) / 2
    cy = (priors[:, 1] + priors[:, 3]) / 2
    return torch.floor(cx / stride + 0.25), torch.floor(cy / stride + 0.25)


def fgd_foreground(priors: Tensor, stride: float, gts: Tensor, valid: Tensor) -> Tensor:
    """Scale-normalised foreground weight of each location of one level.

    A GT box covers the cells ``floor(x1 / s) <= col <= ceil(x2 / s)`` and ``floor(y1 / s) <=
    row <= ceil(y2 / s)`` (``s`` the stride), i.e. ``W_k = ceil(x2 / s) - floor(x1 / s) + 1``
    columns and ``H_k`` rows, and gives each of them ``1 / (H_k W_k)``; where boxes overlap a
    cell keeps the largest (the smallest box's). This is the authors' code's rounding.

    Args:
        priors (Tensor[N_l, 4]): The level's priors, one per location.
        stride (float): The level's stride.
        gts (Tensor[B, G, 4]): GT boxes per image (padded).
        valid (Tensor[B, G]): Which of them are real.

    Returns:
        Tensor[B, N_l]: The weight (0: background).
    """
    col, row = prior_cells(priors, stride)
    if gts.shape[1] == 0:
        return priors.new_zeros(len(gts), len(priors))
    x1, y1 = torch.floor(gts[..., 0] / stride), torch.floor(gts[..., 1] / stride)
    x2, y2 = torch.ceil(gts[..., 2] / stride), torch.ceil(gts[..., 3] / stride)
    area = 1.0 / ((y2 - y1 + 1) * (x2 - x1 + 1))  # [B, G]
    inside = ((col[None, :, None] >= x1[:, None, :]) & (col[None, :, None] <= x2[:, None, :])
              & (row[None, :, None] >= y1[:, None, :]) & (row[None, :, None] <= y2[:, None, :])
              & valid[:, None, :])  # [B, N_l, G]
    return torch.where(inside, area[:, None, :].to(priors.dtype),
                       priors.new_zeros(())).amax(dim=-1)


class FGDRegion:
    """Every location of every level, weighted by FGD's scale-normalised foreground mask.

    The weight of a location is ``1 / (H_k W_k)`` for the GT box ``k`` covering it (its height
    and width in cells of that level; the largest value where boxes overlap) and 0 on the
    background; ``FGDFeatureLoss`` derives the background (``1 / N_bg``) from the zeros. Only
    for feature edges (``output='neck'``), which turn the flat weight into per-level maps.

    Args:
        strides (Sequence[float]): The stride of each level, from P3 (default: mmdet's FPN
            strides 8-128; a neck with fewer levels uses the first ones). Checked once against
            the spacing of the priors.
    """

    #: The priors' centres and the GT boxes: a head-less student's map cells serve.
    needs = ('locations',)

    def __init__(self, strides: Sequence[float] = FPN_STRIDES):
        self.strides = tuple(float(s) for s in strides)
        if not self.strides or min(self.strides) <= 0:
            raise ValueError(f'FGDRegion strides must be positive, got {strides!r}')
        self._checked: set = set()

    def _check_strides(self, ctx: RegionContext) -> None:
        key = tuple(ctx.num_level_priors)
        if key in self._checked:
            return
        if len(ctx.priors) > len(self.strides):
            raise ValueError(f'FGDRegion has strides {self.strides} for {len(ctx.priors)} '
                             f'levels: give one stride per level')
        for i, (priors, s) in enumerate(zip(ctx.priors, self.strides)):
            if len(priors) < 2:
                continue
            # the next location: past the A priors of the first (anchors share a centre)
            c = (priors[:, :2] + priors[:, 2:]) / 2
            moved = ((c - c[0]).abs().sum(-1) > 1e-3 * s).nonzero()
            if not len(moved):
                continue
            dx, dy = (c[int(moved[0])] - c[0]).tolist()
            step = dx if abs(dx) > 1e-6 else dy  # the first row may hold one location
            if abs(step - s) > 1e-3 * s:
                raise ValueError(f'FGDRegion strides {self.strides}: level {i} has stride '
                                 f'{s:g}, but its priors are {step:g} apart; set strides= '
                                 f'to the head\'s prior_generator strides')
        self._checked.add(key)

    def __call__(self, ctx: RegionContext) -> Tensor:
        """Tensor[B, N] weights."""
        self._check_strides(ctx)
        gts, valid = ctx.padded_gts()
        return torch.cat([fgd_foreground(p, s, gts.to(p.dtype), valid)
                          for p, s in zip(ctx.priors, self.strides)], dim=1)

    def __repr__(self) -> str:
        return f'FGDRegion(strides={self.strides})'


def _register():
    from mmrazor.registry import TASK_UTILS
    TASK_UTILS.register_module(module=FGDRegion)


_register()
