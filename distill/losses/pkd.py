"""PKD: feature imitation with the Pearson correlation (Cao et al., NeurIPS 2022).

Each FPN map of the student and of the teacher is standardised per channel (zero mean, unit
variance), then the student's learns the teacher's with a halved MSE, which equals
``1 - r`` with ``r`` the Pearson correlation of the two maps (up to the std's Bessel factor).
The statistics run over the batch and the positions of each level, and the MSE is a mean per
level summed over the levels: mmrazor 1.0's ``PKDLoss`` (the authors' code), which
``tests/losses/test_pkd.py`` checks in value and gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: mmrazor's stability term, added to the std.
EPS = 1e-6


def channel_standardise(feat: Tensor, eps: float = EPS) -> Tensor:
    """Zero mean, unit (unbiased) std per channel, over the batch and the positions.

    Args:
        feat (Tensor[B, C, H, W]): One level.

    Returns:
        Tensor[B, C, H, W]: ``(feat - mean_c) / (std_c + eps)``.
    """
    dims = (0, 2, 3)
    return (feat - feat.mean(dims, keepdim=True)) / (feat.std(dims, keepdim=True) + eps)


def pkd_loss(student: list[Tensor], teacher: list[Tensor], *,
             weight: list[Tensor] | None = None, avg_factor=None) -> Tensor:
    """``sum_l mean((norm(F_S^l) - norm(F_T^l))^2) / 2`` over the levels.

    Args:
        student (list[Tensor[B, C, H_l, W_l]]): Student maps per level (after the adapter,
            where the channel counts differ).
        teacher (list[Tensor[B, C, H_l, W_l]]): Teacher maps (detached here).
        weight (list[Tensor[B, 1, H_l, W_l]], optional): A region's weight of each location:
            the mean becomes the weighted mean over the locations (all ones: mmrazor's).
        avg_factor: Must be None: each level is already a mean (as mmrazor's).

    Returns:
        Tensor[]: The loss.
    """
    if avg_factor is not None:
        raise ValueError('pkd_loss averages each level itself; avg_factor must be None')
    if len(student) != len(teacher):
        raise ValueError(f'{len(student)} student levels vs {len(teacher)} teacher levels')
    total = student[0].new_zeros(())
    for i, (s, t) in enumerate(zip(student, teacher)):
        if s.shape != t.shape:
            raise ValueError(f'level {i}: student map {tuple(s.shape)} vs teacher map '
                             f'{tuple(t.shape)}')
        sq = (channel_standardise(s) - channel_standardise(t.detach())).pow(2)
        if weight is None:
            total = total + sq.mean() / 2
        else:
            w = weight[i]
            den = (w.sum() * s.shape[1]).clamp(min=torch.finfo(sq.dtype).eps)
            total = total + (sq * w).sum() / den / 2
    return total


class PKDFeatureLoss(nn.Module):
    """Registered module around :func:`pkd_loss` (mmrazor's ``PKDLoss``, which keeps its name).

    Args:
        loss_weight (float): Multiplier of the loss.
    """

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, student: list[Tensor], teacher: list[Tensor], *,
                weight: list[Tensor] | None = None, avg_factor=None) -> Tensor:
        """See :func:`pkd_loss`; the result is multiplied by ``loss_weight``."""
        return self.loss_weight * pkd_loss(student, teacher, weight=weight,
                                           avg_factor=avg_factor)

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}'


def _register():
    from mmrazor.registry import MODELS
    MODELS.register_module(module=PKDFeatureLoss)


_register()
