"""Temperature-softened KL divergence shared by KD and LD."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def softened_kl(student: Tensor, teacher: Tensor, T: float) -> Tensor:
    """``KL(softmax(teacher / T) || softmax(student / T)) * T^2`` over the last dimension.

    The teacher is detached: gradients reach the student only. The ``T^2`` factor keeps the
    gradient magnitude independent of ``T`` (Hinton et al.; LD paper Eq. 2-3).

    Args:
        student (Tensor[..., K]): Student logits.
        teacher (Tensor[..., K]): Teacher logits, same shape.
        T (float): Temperature, > 0.

    Returns:
        Tensor[...]: The KL divergence of each row, summed over the ``K`` entries.
    """
    if student.shape != teacher.shape:
        raise ValueError(f'student logits {tuple(student.shape)} and teacher logits '
                         f'{tuple(teacher.shape)} differ in shape')
    if T <= 0:
        raise ValueError(f'temperature T must be > 0, got {T}')
    log_p_s = F.log_softmax(student / T, dim=-1)
    log_p_t = F.log_softmax(teacher.detach() / T, dim=-1)
    # p_t * (log p_t - log p_s), written with exp(log p_t) so that p_t = 0 contributes 0.
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1) * (T * T)


def weighted_average(per_row: Tensor, weight: Tensor | None, avg_factor: float | Tensor | None
                     ) -> Tensor:
    """``sum(weight * per_row) / avg_factor`` (``avg_factor`` None: the sum of the weights).

    Args:
        per_row (Tensor[M]): Loss of each selected row.
        weight (Tensor[M] | None): Row weights (None: all ones).
        avg_factor (float | Tensor | None): Normaliser. The graph passes the region's total
            weight over the whole batch and all GPUs, which makes the loss independent of the
            batch size and the GPU count (the published LD code divides by a constant 4).

    Returns:
        Tensor[]: Scalar loss (0 with a gradient path when there are no rows).
    """
    if weight is None:
        weight = torch.ones_like(per_row)
    total = (per_row * weight).sum()
    if avg_factor is None:
        avg_factor = weight.sum().clamp(min=torch.finfo(per_row.dtype).eps)
    return total / avg_factor
