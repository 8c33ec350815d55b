"""CWD: channel-wise distillation (Shu et al., ICCV 2021).

Each channel of a map becomes a distribution over the spatial positions (a softmax at
temperature ``tau``), and the student's distribution learns the teacher's with
``KL(teacher || student) * tau^2``, summed over the positions and averaged over the channels
and the images. Every FPN level is one such loss and the levels are summed: mmrazor 1.0's
``ChannelWiseDivergence`` applied per level (its detection configs build one per FPN output,
each with the same weight), which ``tests/losses/test_cwd_mgd.py`` checks in value and
gradient.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distill.losses._levels import check_levels


def cwd_level(student: Tensor, teacher: Tensor, tau: float = 1.0,
              weight: Tensor | None = None) -> Tensor:
    """The CWD loss of one level.

    Args:
        student (Tensor[B, C, H, W]): Student map.
        teacher (Tensor[B, C, H, W]): Teacher map (detached here).
        tau (float): Temperature of the spatial softmax.
        weight (Tensor[B, 1, H, W], optional): A region's weight of each position: each
            position's KL term is multiplied by it (the softmax still runs over every
            position). None or all ones: mmrazor's.

    Returns:
        Tensor[]: ``tau^2 / (B C) * sum_{b,c,hw} w_{b,hw} p^T_{bc}(hw) (log p^T_{bc}(hw) -
        log p^S_{bc}(hw))`` with ``p_{bc} = softmax_hw(F_{bc} / tau)``.
    """
    b, c = student.shape[:2]
    log_s = F.log_softmax(student.flatten(2) / tau, dim=2)
    log_t = F.log_softmax(teacher.detach().flatten(2) / tau, dim=2)
    kl = log_t.exp() * (log_t - log_s)  # [B, C, HW]
    if weight is not None:
        kl = kl * weight.flatten(2).to(kl.dtype)
    return kl.sum() * tau ** 2 / (b * c)


def cwd_loss(student: list[Tensor], teacher: list[Tensor], *, tau: float = 1.0,
             weight: list[Tensor] | None = None, avg_factor=None) -> Tensor:
    """``sum_l cwd_level(F_S^l, F_T^l)`` over the FPN levels.

    Args:
        student (list[Tensor[B, C, H_l, W_l]]): Student maps per level (after the graph's
            1x1 adapter, where the channel counts differ).
        teacher (list[Tensor[B, C, H_l, W_l]]): Teacher maps (detached here).
        tau (float): Temperature (paper and mmrazor: 1 for detection).
        weight (list[Tensor[B, 1, H_l, W_l]], optional): A region's weight per position (see
            :func:`cwd_level`).
        avg_factor: Must be None: each level is normalised by its ``B C``.

    Returns:
        Tensor[]: The loss.
    """
    check_levels('cwd_loss', student, teacher, weight, avg_factor)
    total = student[0].new_zeros(())
    for i, (s, t) in enumerate(zip(student, teacher)):
        total = total + cwd_level(s, t, tau, None if weight is None else weight[i])
    return total


class CWDFeatureLoss(nn.Module):
    """Registered module around :func:`cwd_loss` (mmrazor's ``ChannelWiseDivergence`` keeps
    its name in the registry).

    Args:
        tau (float): Temperature.
        loss_weight (float): Multiplier of the loss (of every level's).
    """

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0):
        super().__init__()
        if tau <= 0:
            raise ValueError(f'tau must be positive, got {tau}')
        self.tau = tau
        self.loss_weight = loss_weight

    def forward(self, student: list[Tensor], teacher: list[Tensor], *,
                weight: list[Tensor] | None = None, avg_factor=None) -> Tensor:
        """See :func:`cwd_loss`; the result is multiplied by ``loss_weight``."""
        return self.loss_weight * cwd_loss(student, teacher, tau=self.tau, weight=weight,
                                           avg_factor=avg_factor)

    def extra_repr(self) -> str:
        return f'tau={self.tau}, loss_weight={self.loss_weight}'


def _register():
    from mmrazor.registry import MODELS
    MODELS.register_module(module=CWDFeatureLoss)


_register()
