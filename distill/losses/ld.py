"""Localization distillation (LD, Zheng et al., CVPR 2022 / TPAMI 2023), paper Eq. 2-4."""

from __future__ import annotations

from torch import Tensor, nn

from distill.losses._kl import softened_kl, weighted_average

BINS = ('sum', 'mean')


def ld_per_box(student: Tensor, teacher: Tensor, T: float = 10.0, bins: str = 'sum') -> Tensor:
    """LD of each box: the softened KL summed over its 4 edges (paper Eq. 2-4).

    Args:
        student (Tensor[M, 4 * n] | Tensor[M, 4, n]): Student box logits, ``n = reg_max + 1``.
        teacher (Tensor[M, 4 * n] | Tensor[M, 4, n]): Teacher box logits (detached here).
        T (float): Temperature (paper: 10).
        bins (str): ``'sum'`` (the paper's KL, a sum over the bins) or ``'mean'`` (the
            published code and mmdet's ``KnowledgeDistillationKLDivLoss``: the KL divided by
            the ``n`` bins).

    Returns:
        Tensor[M]: ``sum_e KL_e(m)`` of each box (``/ n`` with ``bins='mean'``).
    """
    if bins not in BINS:
        raise ValueError(f'bins must be one of {BINS}, got {bins!r}')
    if student.dim() == 2:
        if student.shape[1] % 4:
            raise ValueError(f'box logits need 4 * (reg_max + 1) channels, got '
                             f'{student.shape[1]}')
        # explicit bin count: reshape(M, 4, -1) is ambiguous when M = 0 (an empty region)
        n = student.shape[1] // 4
        student = student.reshape(student.shape[0], 4, n)
        teacher = teacher.reshape(teacher.shape[0], 4, teacher.shape[1] // 4)
    per_box = softened_kl(student, teacher, T).sum(-1)
    return per_box / student.shape[-1] if bins == 'mean' else per_box


def ld_loss(student: Tensor, teacher: Tensor, *, weight: Tensor | None = None,
            avg_factor: float | Tensor | None = None, T: float = 10.0,
            bins: str = 'sum') -> Tensor:
    """LD between the box-edge distributions of student and teacher.

    Each box is 4 edges, each a distribution over ``n = reg_max + 1`` bins (GFL's general
    distribution). Per edge: ``KL(S(z_T, T) || S(z_S, T)) * T^2`` (Eq. 2-3); per box: the
    sum over its 4 edges (Eq. 4). The published code divides by the number of bins (it
    averages the KL over them): ``bins='mean'``; the default is the paper's sum.

    Args:
        student (Tensor[M, 4 * n] | Tensor[M, 4, n]): Student box logits of the M boxes.
        teacher (Tensor[M, 4 * n] | Tensor[M, 4, n]): Teacher box logits (detached here).
        weight (Tensor[M], optional): Weight of each box.
        avg_factor (float | Tensor, optional): Normaliser (default: the sum of the weights).
        T (float): Temperature (paper: 10).
        bins (str): ``'sum'`` (paper) or ``'mean'`` (published code), see :func:`ld_per_box`.

    Returns:
        Tensor[]: ``sum_m weight_m * sum_e KL_e(m) / avg_factor``.
    """
    return weighted_average(ld_per_box(student, teacher, T, bins), weight, avg_factor)


class LDLoss(nn.Module):
    """Registered module around :func:`ld_loss`.

    Args:
        T (float): Temperature (paper: 10).
        loss_weight (float): Multiplier of the loss.
        bins (str): ``'sum'`` (paper, default) or ``'mean'`` (published code: the KL
            averaged over the ``reg_max + 1`` bins).
    """

    def __init__(self, T: float = 10.0, loss_weight: float = 1.0, bins: str = 'sum'):
        super().__init__()
        if bins not in BINS:
            raise ValueError(f'LDLoss bins must be one of {BINS}, got {bins!r}')
        self.T = T
        self.loss_weight = loss_weight
        self.bins = bins

    def forward(self, student: Tensor, teacher: Tensor, *, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None) -> Tensor:
        """See :func:`ld_loss`; the result is multiplied by ``loss_weight``."""
        return self.loss_weight * ld_loss(student, teacher, weight=weight,
                                          avg_factor=avg_factor, T=self.T, bins=self.bins)

    def extra_repr(self) -> str:
        return f'T={self.T}, loss_weight={self.loss_weight}, bins={self.bins!r}'


def _register():
    from mmrazor.registry import MODELS
    MODELS.register_module(module=LDLoss)


_register()
