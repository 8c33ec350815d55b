"""Quality-focal KD on sigmoid class scores: CrossKD's classification term (Wang et al., CVPR 2024).

Dense detectors score each class with its own sigmoid (QFL, focal loss), so the teacher's
scores are soft Bernoulli targets: the student's (or the cross-head's) logits learn them with
binary cross-entropy, scaled by ``|sigma(z_S) - sigma(z_T)|^beta`` as QFL scales its BCE
(GFL Eq. 5, with the teacher's score in place of the IoU target), beta = 1 in CrossKD.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distill.losses._kl import weighted_average


def qfl_kd_per_row(student: Tensor, teacher: Tensor, beta: float = 1.0) -> Tensor:
    """``sum_c BCE(sigma(z_S), sigma(z_T)) * |sigma(z_S) - sigma(z_T)|^beta`` of each row.

    Args:
        student (Tensor[M, C]): Student (or cross-head) class logits.
        teacher (Tensor[M, C]): Teacher class logits (detached here).
        beta (float): Focusing exponent (CrossKD: 1).

    Returns:
        Tensor[M]: Summed over the ``C`` classes (mmdet sums its QFL over classes too).
    """
    if student.shape != teacher.shape:
        raise ValueError(f'student logits {tuple(student.shape)} and teacher logits '
                         f'{tuple(teacher.shape)} differ in shape')
    target = teacher.detach().sigmoid()
    bce = F.binary_cross_entropy_with_logits(student, target, reduction='none')
    return (bce * (student.sigmoid() - target).abs().pow(beta)).sum(-1)


def qfl_kd_loss(student: Tensor, teacher: Tensor, *, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None, beta: float = 1.0) -> Tensor:
    """Quality-focal KD over the rows of a region.

    Args:
        student (Tensor[M, C]): Student (or cross-head) class logits.
        teacher (Tensor[M, C]): Teacher class logits (detached here).
        weight (Tensor[M], optional): Weight of each row.
        avg_factor (float | Tensor, optional): Normaliser (default: the sum of the weights).
        beta (float): Focusing exponent.

    Returns:
        Tensor[]: ``sum_m weight_m * L(m) / avg_factor``.
    """
    return weighted_average(qfl_kd_per_row(student, teacher, beta), weight, avg_factor)


class QFLKDLoss(nn.Module):
    """Registered module around :func:`qfl_kd_loss`.

    Args:
        beta (float): Focusing exponent (CrossKD: 1).
        loss_weight (float): Multiplier of the loss.
    """

    def __init__(self, beta: float = 1.0, loss_weight: float = 1.0):
        super().__init__()
        if beta < 0:
            raise ValueError(f'QFLKDLoss beta must be >= 0, got {beta}')
        self.beta = beta
        self.loss_weight = loss_weight

    def forward(self, student: Tensor, teacher: Tensor, *, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None) -> Tensor:
        """See :func:`qfl_kd_loss`; the result is multiplied by ``loss_weight``."""
        return self.loss_weight * qfl_kd_loss(student, teacher, weight=weight,
                                              avg_factor=avg_factor, beta=self.beta)

    def extra_repr(self) -> str:
        return f'beta={self.beta}, loss_weight={self.loss_weight}'


def _register():
    from mmrazor.registry import MODELS
    MODELS.register_module(module=QFLKDLoss)


_register()
