"""The candidate scores of MOD's APS (Sec. 3.2.2, Eq. 6-8), for all GTs at once."""

from __future__ import annotations

import torch
from torch import Tensor


def aps_scores(loss_cls: Tensor, loss_reg: Tensor, valid: Tensor) -> Tensor:
    """``S = sqrt(S_u * S_m)`` of each GT's candidates (low = a good positive).

    ``S_u`` (Eq. 6) is the mean of the two losses' softmaxes over the GT's candidates (the
    overall unfitness); ``S_m`` (Eq. 7) is ``sigmoid(|L_cls - L_reg|)`` (the misalignment of the
    two tasks); Eq. 8 takes the square root of their product.

    Args:
        loss_cls (Tensor[G, M]): Classification loss of each candidate as if it were positive.
        loss_reg (Tensor[G, M]): Regression loss of each candidate as if it were positive.
        valid (Tensor[G, M]): Which entries are candidates (bool); the softmaxes run over these.

    Returns:
        Tensor[G, M]: S, 0 where not valid.
    """
    neg_inf = loss_cls.new_tensor(float('-inf'))
    soft_cls = torch.where(valid, loss_cls, neg_inf).softmax(-1)
    soft_reg = torch.where(valid, loss_reg, neg_inf).softmax(-1)
    s_u = (soft_cls + soft_reg) / 2
    s_m = (loss_cls - loss_reg).abs().sigmoid()
    # a GT without candidates has NaN softmaxes (all -inf): zeroed with the other invalid entries
    return torch.where(valid, (s_u * s_m).sqrt(), torch.zeros_like(s_u))
