"""BCKD (Yang et al., "Bridging Cross-task Protocol Inconsistency for Distillation in Dense
Object Detection", ICCV 2023, arXiv 2308.14286): binary classification distillation and
IoU-based localisation distillation.

**Where the equations come from.** The paper's method section could not be read here (only its
abstract is reachable through this project's search tools); the equations below are the
paper's as transcribed by two independent third-party readings of it (a paper note that quotes
them in LaTeX, and a note that compares "the paper's text and Algorithm" with the published
code), and they agree in form with the published code (TinyTigerPan/BCKD, read only to find
its departures). The paper's own equation numbers are unknown; ``(B1)``-``(B4)`` are this
module's labels. See docs/methods.md, "BCKD".

With ``l`` the class logits (``n`` priors x ``K`` classes) and ``p' = sigma(l)`` (each class a
binary problem, the protocol the detector itself uses), ``b = Decoder(A_i, o_i)`` the decoded
boxes:

```
(B1) L_BCE(p'_s, p'_t) = -[(1 - p'_t) log(1 - p'_s) + p'_t log p'_s]
(B2) L_cls = sum_i sum_j w_ij L_BCE(p'_s,ij, p'_t,ij),   w_ij = |p'_t,ij - p'_s,ij|
(B3) L_loc = sum_i max_j(w_ij) (1 - IoU(b^s_i, b^t_i))
(B4) L = alpha_1 L_cls + alpha_2 L_loc,   alpha_1 = 1, alpha_2 = 4
```

over every prior ``i`` (not only the positives); no temperature. Here the sums over ``i`` are
divided by the student's positive count over the batch and GPUs (the graph's
``normalize='positives'``, the published code's ``avg_factor``): a plain sum would grow with
the batch size. ``w_ij`` in (B2) is a function of the student and is differentiated (as the
equation reads, and as the published code does); the weight ``max_j w_ij`` of (B3) is a region
(:class:`~distill.regions.ScoreGapRegion`), detached, as the published code does (the
transcribed equation does not say). The published code's localisation term is a GIoU loss
(weight 4), not ``1 - IoU``: ``BCKDLocLoss(mode='giou')``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distill.losses._kl import weighted_average
from distill.losses.iou_kd import iou_kd_per_box

LOC_MODES = ('iou', 'giou')


def bckd_cls_per_row(student: Tensor, teacher: Tensor) -> Tensor:
    """Binary classification distillation of each prior: ``sum_j w_ij L_BCE`` (B1-B2).

    Args:
        student (Tensor[M, K]): Student class logits (sigmoid classifier; GFL: the joint
            class-quality logits).
        teacher (Tensor[M, K]): Teacher class logits (detached here).

    Returns:
        Tensor[M]: The loss of each prior, summed over its ``K`` binary problems.
    """
    if student.shape != teacher.shape:
        raise ValueError(f'student logits {tuple(student.shape)} and teacher logits '
                         f'{tuple(teacher.shape)} differ in shape')
    p_t = teacher.detach().sigmoid()  # p'_t = sigma(l_t), the soft binary target
    # (B1), with log(1 - sigma(l)) = logsigmoid(-l): finite for any logit
    bce = -((1 - p_t) * F.logsigmoid(-student) + p_t * F.logsigmoid(student))
    w = (p_t - student.sigmoid()).abs()  # (B2) w_ij = |p'_t - p'_s|, a function of l_s
    return (w * bce).sum(-1)


def bckd_cls_loss(student: Tensor, teacher: Tensor, *, weight: Tensor | None = None,
                  avg_factor: float | Tensor | None = None) -> Tensor:
    """BCKD's classification term (B2) over the rows of a region.

    Args:
        student (Tensor[M, K]): Student class logits.
        teacher (Tensor[M, K]): Teacher class logits (detached here).
        weight (Tensor[M], optional): Weight of each row (the recipe's region: all ones).
        avg_factor (float | Tensor, optional): Normaliser (default: the sum of the weights;
            the recipe: the student's positives).

    Returns:
        Tensor[]: ``sum_m weight_m * sum_j w_mj L_BCE(m, j) / avg_factor``.
    """
    return weighted_average(bckd_cls_per_row(student, teacher), weight, avg_factor)


def bckd_loc_per_box(student: Tensor, teacher: Tensor, mode: str = 'iou') -> Tensor:
    """``1 - IoU(b^s, b^t)`` (B3) or ``1 - GIoU`` (the published code) of each box pair.

    Args:
        student (Tensor[M, 4]): Student decoded boxes ``(x1, y1, x2, y2)``.
        teacher (Tensor[M, 4]): Teacher decoded boxes at the same priors (detached here).
        mode (str): ``'iou'`` (paper, B3) or ``'giou'`` (published code: mmdet's GIoULoss).

    Returns:
        Tensor[M]: The loss of each box (mmdet's IoU, eps 1e-6).
    """
    if mode not in LOC_MODES:
        raise ValueError(f'mode must be one of {LOC_MODES}, got {mode!r}')
    return iou_kd_per_box(student, teacher, mode)


def bckd_loc_loss(student: Tensor, teacher: Tensor, *, weight: Tensor | None = None,
                  avg_factor: float | Tensor | None = None, mode: str = 'iou') -> Tensor:
    """BCKD's localisation term (B3): ``sum_i weight_i (1 - IoU_i) / avg_factor``.

    Args:
        student (Tensor[M, 4]): Student decoded boxes.
        teacher (Tensor[M, 4]): Teacher decoded boxes (detached here).
        weight (Tensor[M], optional): ``max_j w_ij`` of each prior (the recipe's
            :class:`~distill.regions.ScoreGapRegion`).
        avg_factor (float | Tensor, optional): Normaliser (default: the sum of the weights;
            the recipe: the student's positives).
        mode (str): ``'iou'`` (paper) or ``'giou'`` (published code).

    Returns:
        Tensor[]: The weighted sum divided by ``avg_factor``.
    """
    return weighted_average(bckd_loc_per_box(student, teacher, mode), weight, avg_factor)


class BCKDClsLoss(nn.Module):
    """Registered module around :func:`bckd_cls_loss` (edge: ``cls_logits``, ``AllRegion``).

    Args:
        loss_weight (float): ``alpha_1`` (B4; the recipe: 1).
    """

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, student: Tensor, teacher: Tensor, *, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None) -> Tensor:
        """See :func:`bckd_cls_loss`; the result is multiplied by ``loss_weight``."""
        return self.loss_weight * bckd_cls_loss(student, teacher, weight=weight,
                                                avg_factor=avg_factor)

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}'


class BCKDLocLoss(nn.Module):
    """Registered module around :func:`bckd_loc_loss` (edge: ``boxes``, ``ScoreGapRegion``).

    Args:
        mode (str): ``'iou'`` (paper: ``1 - IoU``) or ``'giou'`` (published code).
        loss_weight (float): ``alpha_2`` (B4; the recipe: 4).
    """

    def __init__(self, mode: str = 'iou', loss_weight: float = 1.0):
        super().__init__()
        if mode not in LOC_MODES:
            raise ValueError(f'BCKDLocLoss mode must be one of {LOC_MODES}, got {mode!r}')
        self.mode = mode
        self.loss_weight = loss_weight

    def forward(self, student: Tensor, teacher: Tensor, *, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None) -> Tensor:
        """See :func:`bckd_loc_loss`; the result is multiplied by ``loss_weight``."""
        return self.loss_weight * bckd_loc_loss(student, teacher, weight=weight,
                                                avg_factor=avg_factor, mode=self.mode)

    def extra_repr(self) -> str:
        return f'mode={self.mode!r}, loss_weight={self.loss_weight}'


def _register():
    from mmrazor.registry import MODELS
    for cls in (BCKDClsLoss, BCKDLocLoss):
        MODELS.register_module(module=cls)


_register()
