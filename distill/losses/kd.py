"""Classification knowledge distillation (Hinton et al.) on class logits, as in LD's code."""

from __future__ import annotations

from torch import Tensor, nn

from distill.losses._kl import softened_kl, weighted_average


def kd_loss(student: Tensor, teacher: Tensor, *, weight: Tensor | None = None,
            avg_factor: float | Tensor | None = None, T: float = 2.0) -> Tensor:
    """KD on class logits: ``KL(softmax(z_T / T) || softmax(z_S / T)) * T^2`` per row.

    The softmax runs over the classes, the form of the published LD code (its "Main KD"),
    even for sigmoid (QFL) classifiers. Unlike mmdet's ``KnowledgeDistillationKLDivLoss``,
    the KL is summed over classes, not averaged: its value does not shrink with the
    number of classes.

    Args:
        student (Tensor[M, C]): Student class logits.
        teacher (Tensor[M, C]): Teacher class logits (detached here).
        weight (Tensor[M], optional): Weight of each row.
        avg_factor (float | Tensor, optional): Normaliser (default: the sum of the weights).
        T (float): Temperature (published code: 2).

    Returns:
        Tensor[]: ``sum_m weight_m * KL(m) / avg_factor``.
    """
    return weighted_average(softened_kl(student, teacher, T), weight, avg_factor)


class KDLoss(nn.Module):
    """Registered module around :func:`kd_loss`.

    Args:
        T (float): Temperature (published LD code: 2).
        loss_weight (float): Multiplier of the loss.
    """

    def __init__(self, T: float = 2.0, loss_weight: float = 1.0):
        super().__init__()
        self.T = T
        self.loss_weight = loss_weight

    def forward(self, student: Tensor, teacher: Tensor, *, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None) -> Tensor:
        """See :func:`kd_loss`; the result is multiplied by ``loss_weight``."""
        return self.loss_weight * kd_loss(student, teacher, weight=weight,
                                          avg_factor=avg_factor, T=self.T)

    def extra_repr(self) -> str:
        return f'T={self.T}, loss_weight={self.loss_weight}'


def _register():
    from mmrazor.registry import MODELS
    MODELS.register_module(module=KDLoss)


_register()
