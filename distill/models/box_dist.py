"""Boxes as distances from the predicting location, in strides: plain or as GFL's general
distribution. The general distribution is the box option of heads that predict deltas (DDOD,
FCOS/MOD), so that LD applies to them.

LD distils box *distributions* (LD paper Sec. 3.1): a head predicting deltas can be neither
its teacher nor its student. As the LD paper does for its non-GFL detectors, the option
replaces the 4 regression outputs by GFL's general distribution: per side ``reg_max + 1``
logits over the distances ``0 .. reg_max`` (in strides) from the predicting location; the
distance is the distribution's expectation (GFL Eq. 4) and Distribution Focal Loss (GFL Eq. 6)
trains its shape next to the head's own box loss (GIoU on the decoded boxes).
"""

from __future__ import annotations

import torch
from mmdet.models.task_modules.coders import BaseBBoxCoder
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures.bbox import bbox2distance
from torch import Tensor, nn

from distill.graph.outputs import HeadOutput, dist_to_ltrb


@TASK_UTILS.register_module()
class StrideDistanceCoder(BaseBBoxCoder):
    """Boxes as ``(l, t, r, b)`` distances, in strides, from the prior's centre.

    A prior is an anchor box ``(x1, y1, x2, y2)`` (its stride is its width / ``anchor_scale``:
    square anchors, one per location) or a point with its stride ``(x, y, stride, stride)``
    (mmdet's ``grid_priors(with_stride=True)``).

    Args:
        reg_max (int, optional): None: the prediction is the 4 distances; an int: it is GFL's
            general distribution, ``4 x (reg_max + 1)`` logits (GFL: 16).
        anchor_scale (float, optional): Anchor side in strides (the anchor generator's
            ``octave_base_scale``); None for point priors.
    """

    def __init__(self, reg_max: int | None = None, anchor_scale: float | None = None, **kwargs):
        super().__init__(**kwargs)
        if reg_max is not None and (int(reg_max) != reg_max or reg_max < 1):
            raise ValueError(f'StrideDistanceCoder reg_max must be None or a positive int, '
                             f'got {reg_max!r}')
        self.reg_max = None if reg_max is None else int(reg_max)
        self.anchor_scale = anchor_scale
        self.encode_size = 4 if reg_max is None else 4 * (self.reg_max + 1)

    def centres_strides(self, priors: Tensor) -> tuple[Tensor, Tensor]:
        """``centres (Tensor[..., 2])`` in pixels and ``strides (Tensor[...])`` of the priors
        (Tensor[..., 4])."""
        if self.anchor_scale is not None:
            return ((priors[..., :2] + priors[..., 2:4]) / 2,
                    (priors[..., 2] - priors[..., 0]) / self.anchor_scale)
        if priors.shape[-1] < 3:
            raise ValueError('StrideDistanceCoder: point priors need their stride, '
                             '(x, y, stride, stride) (grid_priors(..., with_stride=True)), or '
                             'set anchor_scale for anchor boxes')
        return priors[..., :2], priors[..., 2]

    def ltrb(self, pred: Tensor) -> Tensor:
        """Tensor[..., 4]: distances in strides (the expectation for a distribution)."""
        return pred if self.reg_max is None else dist_to_ltrb(pred, self.reg_max)

    def encode(self, priors: Tensor, gt_bboxes: Tensor) -> Tensor:
        """The targets stay boxes (mmdet's ``reg_decoded_bbox`` convention)."""
        return gt_bboxes

    def decode(self, priors: Tensor, pred: Tensor, max_shape=None) -> Tensor:
        """Boxes ``(x1, y1, x2, y2)`` (Tensor[..., N, 4]) from predictions (Tensor[..., N, K])."""
        if pred.shape[-1] != self.encode_size:
            raise ValueError(f'StrideDistanceCoder(reg_max={self.reg_max}) decodes '
                             f'{self.encode_size} values per prior, got {pred.shape[-1]}')
        centres, strides = self.centres_strides(priors.to(pred))
        d = self.ltrb(pred) * strides[..., None]
        boxes = torch.cat([centres - d[..., :2], centres + d[..., 2:]], -1)
        if max_shape is not None:  # (h, w) of the image
            h, w = max_shape[:2]
            boxes = torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h),
                                 boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)], -1)
        return boxes

    def dfl_targets(self, priors: Tensor, gt_bboxes: Tensor) -> Tensor:
        """Tensor[N, 4]: GT distances in strides, just below ``reg_max`` (GFL's 0.01), so both
        bins of DFL's interpolation exist."""
        centres, strides = self.centres_strides(priors)
        return bbox2distance(centres / strides[:, None], gt_bboxes / strides[:, None],
                             self.reg_max, eps=0.01)


def dfl_loss(loss_dfl, coder: StrideDistanceCoder, dist: Tensor, priors: Tensor,
             gt_bboxes: Tensor, weight: Tensor | None = None, avg_factor=None) -> Tensor:
    """DFL (GFL Eq. 6) of positive priors, each side one sample, as mmdet's ``GFLHead``.

    Args:
        loss_dfl (nn.Module): ``DistributionFocalLoss``.
        dist (Tensor[P, 4 * (reg_max + 1)]): Logits of the positives.
        priors (Tensor[P, 4]): Their priors.
        gt_bboxes (Tensor[P, 4]): Their assigned GT boxes.
        weight (Tensor[P], optional): Per-positive weight, repeated over the 4 sides.
        avg_factor (float, optional): Divisor.
    """
    target = coder.dfl_targets(priors, gt_bboxes).reshape(-1)
    w = None if weight is None else weight[:, None].expand(-1, 4).reshape(-1)
    return loss_dfl(dist.reshape(-1, coder.reg_max + 1), target, weight=w,
                    avg_factor=avg_factor)


def max_entropy_logits(reg_max: int, mean: float) -> Tensor:
    """Tensor[reg_max + 1] (float64): logits ``-lambda * k`` of the maximum-entropy
    distribution over the bins ``k = 0 .. reg_max`` whose expectation is ``mean``.

    The expectation falls monotonically as ``lambda`` grows, so bisection finds it; lambda = 0
    is the uniform distribution (expectation ``reg_max / 2``).
    """
    if not 0 < mean < reg_max:
        raise ValueError(f'the initial distance must lie strictly between 0 and reg_max='
                         f'{reg_max} strides, got {mean!r}')
    bins = torch.arange(reg_max + 1, dtype=torch.float64)
    lo, hi = -60.0, 60.0  # expectations ~reg_max and ~0
    for _ in range(100):
        lam = (lo + hi) / 2
        if (torch.softmax(-lam * bins, 0) * bins).sum() > mean:
            lo = lam
        else:
            hi = lam
    return -(lo + hi) / 2 * bins


@torch.no_grad()
def init_distribution(bias: Tensor, reg_max: int, distance: float) -> None:
    """Set the regression conv's bias so that each side's distribution starts as the
    maximum-entropy distribution over the bins whose expected distance is ``distance``.

    Why maximum entropy: it is the distribution closest to GFL's own start (zero bias, uniform,
    the maximum-entropy distribution with no constraint) that has the wanted expectation. A
    peaked start (a bump ``-(k - d)^2 / 2``, this function before issue 11's grids) made a
    DDOD student's first VLR LD loss ~30x a GFL student's (197 vs 6 at iteration 20 of
    digits-scenes, 4.0 with this start), its gradient saturated the clip for the first epochs,
    and a 6-epoch kd_ld_vlr run (seed 0) reached 7.8 AP (18.5 with this start).

    Args:
        bias (Tensor[P * 4 * (reg_max + 1)]): The conv's bias (P priors per location).
        reg_max (int): Bins - 1.
        distance (float): The distributions' expectation, in strides, in (0, reg_max).
    """
    logits = max_entropy_logits(reg_max, distance).to(bias)
    bias.copy_(logits.repeat(bias.numel() // (reg_max + 1)))


def square_anchor_scale(head, option: str) -> float:
    """The anchors' side in strides; raises unless they are square, one per location."""
    gen = head.prior_generator
    if len(gen.ratios) != 1 or float(gen.ratios[0]) != 1.0 or len(gen.scales) != 1:
        raise ValueError(f'{type(head).__name__}({option}) decodes distances from square '
                         f'anchors, one per location: the anchor generator needs ratios=[1.0] '
                         f'and scales_per_octave=1, got ratios={gen.ratios.tolist()} and '
                         f'{len(gen.scales)} scales')
    return float(gen.scales[0])


class BoxDistOption:
    """The general-distribution option of a dense head (``ATSSDistHead``, ``DDODPaperHead``,
    ``MODHead``): a mixin placed before the mmdet head class.

    The head sets ``box_dist_reg_max`` (None: its own deltas or distances; an int: GFL's
    distribution) before mmdet's ``__init__`` builds its layers; ``reg_max`` reads it under
    GFL's name, which the pair check compares.
    """

    box_dist_reg_max: int | None = None

    @property
    def reg_max(self) -> int | None:
        return self.box_dist_reg_max

    def box_dist_conv(self, priors: int = 1) -> nn.Conv2d:
        """The regression conv of the distribution: ``priors x 4 x (reg_max + 1)`` outputs."""
        return nn.Conv2d(self.feat_channels, priors * 4 * (self.box_dist_reg_max + 1), 3,
                         padding=1)

    def use_anchor_box_dist(self, loss_dfl: dict) -> None:
        """After an anchor head's ``__init__``: decode from square anchors, keep the targets as
        boxes, and build DFL."""
        scale = square_anchor_scale(self, f'box_dist={self.box_dist_reg_max}')
        self.bbox_coder = StrideDistanceCoder(self.box_dist_reg_max, anchor_scale=scale)
        self.reg_decoded_bbox = True  # the coder's targets are boxes
        self.loss_dfl = MODELS.build(loss_dfl)

    def start_at_anchor(self, conv: nn.Conv2d) -> None:
        """Each side's distribution starts with an expectation of the anchor's half side (the
        maximum-entropy distribution, ``init_distribution``), as deltas of 0 start at
        the anchor: the assigners' cost reads the predicted boxes, and uniform logits (an
        expected ``reg_max / 2`` strides) would put every early positive on the finest level."""
        init_distribution(conv.bias, self.box_dist_reg_max, self.bbox_coder.anchor_scale / 2)

    def box_output(self, deltas_doc: str) -> dict:
        """The named box output: ``box_dist`` with the option, else ``box_deltas``."""
        if self.box_dist_reg_max is None:
            return dict(box_deltas=HeadOutput('head', 1, deltas_doc))
        return dict(box_dist=HeadOutput('head', 1, 'box distributions, 4 x (reg_max + 1) logits'))
