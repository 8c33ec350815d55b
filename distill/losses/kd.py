"""Classification knowledge distillation (Hinton et al.) on class logits, as in LD's code."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distill.losses._kl import softened_kl, weighted_average

ACTIVATIONS = ('auto', 'softmax', 'sigmoid')


def kd_loss(student: Tensor, teacher: Tensor, *, weight: Tensor | None = None,
            avg_factor: float | Tensor | None = None, T: float = 2.0,
            activation: str = 'auto') -> Tensor:
    """KD on class logits: ``KL(softmax(z_T / T) || softmax(z_S / T)) * T^2`` per row.

    ``'softmax'`` runs the softmax over the classes, the form of the published LD code (its
    "Main KD"), even for sigmoid (QFL) classifiers. With a single class that KL is identically
    0, so ``'sigmoid'`` treats each class logit as a Bernoulli variable instead (``sigmoid(z /
    T)`` vs its complement, i.e. a softmax over ``(z, 0)``) and sums the KL over classes.
    ``'auto'`` (default) is softmax for two classes or more, sigmoid for one. Unlike mmdet's
    ``KnowledgeDistillationKLDivLoss``, the KL is summed over classes, not averaged: its value
    does not shrink with the number of classes.

    Args:
        student (Tensor[M, C]): Student class logits.
        teacher (Tensor[M, C]): Teacher class logits (detached here).
        weight (Tensor[M], optional): Weight of each row.
        avg_factor (float | Tensor, optional): Normaliser (default: the sum of the weights).
        T (float): Temperature (published code: 2).
        activation (str): ``'auto'``, ``'softmax'`` or ``'sigmoid'``.

    Returns:
        Tensor[]: ``sum_m weight_m * KL(m) / avg_factor``.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f'activation must be one of {ACTIVATIONS}, got {activation!r}')
    if activation == 'auto':
        activation = 'softmax' if student.shape[-1] > 1 else 'sigmoid'
    if activation == 'softmax' and student.shape[-1] == 1:
        raise ValueError("a softmax over 1 class is constant, so softmax KD is identically 0; "
                         "use activation='sigmoid' (or 'auto') for a single-class detector")
    if activation == 'sigmoid':
        if student.shape != teacher.shape:  # checked here: the stacking would hide it
            softened_kl(student, teacher, T)
        per_row = softened_kl(torch.stack([student, torch.zeros_like(student)], -1),
                              torch.stack([teacher, torch.zeros_like(teacher)], -1), T).sum(-1)
    else:
        per_row = softened_kl(student, teacher, T)
    return weighted_average(per_row, weight, avg_factor)


class KDLoss(nn.Module):
    """Registered module around :func:`kd_loss`.

    Args:
        T (float): Temperature (published LD code: 2).
        loss_weight (float): Multiplier of the loss.
        activation (str): ``'auto'`` (softmax over classes; sigmoid for one class),
            ``'softmax'`` or ``'sigmoid'``; see :func:`kd_loss`.
    """

    def __init__(self, T: float = 2.0, loss_weight: float = 1.0, activation: str = 'auto'):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f'activation must be one of {ACTIVATIONS}, got {activation!r}')
        self.T = T
        self.loss_weight = loss_weight
        self.activation = activation

    def forward(self, student: Tensor, teacher: Tensor, *, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None) -> Tensor:
        """See :func:`kd_loss`; the result is multiplied by ``loss_weight``."""
        return self.loss_weight * kd_loss(student, teacher, weight=weight,
                                          avg_factor=avg_factor, T=self.T,
                                          activation=self.activation)

    def extra_repr(self) -> str:
        return f'T={self.T}, loss_weight={self.loss_weight}, activation={self.activation!r}'


def _register():
    from mmrazor.registry import MODELS
    MODELS.register_module(module=KDLoss)


_register()
