"""FGD: focal and global distillation (Yang et al., CVPR 2022).

Per FPN level, with ``F^S`` the student's map (after the graph's adapter), ``F^T`` the
teacher's, ``B`` the batch size and ``T`` a temperature:

- attention of a map ``F`` (``C`` channels, ``H x W`` positions):
  ``A^S = H W softmax_hw(mean_c |F| / T)`` (spatial) and ``A^C = C softmax_c(mean_hw |F| / T)``
  (channel);
- focal feature loss, weighted by the *teacher's* attentions:
  ``alpha / B sum M A^S_T A^C_T (F^S - F^T)^2 + beta / B sum N A^S_T A^C_T (F^S - F^T)^2``
  with ``M`` the scale-normalised foreground weight of a position (``1 / (H_k W_k)`` of the
  GT box covering it, the largest where boxes overlap; :class:`~distill.regions.FGDRegion`)
  and ``N = [M == 0] / sum [M == 0]`` the background's (per image);
- attention loss: ``gamma / B (sum |A^C_S - A^C_T| + sum |A^S_S - A^S_T|)``;
- global loss: ``lambda / B sum (R_S(F^S) - R_T(F^T))^2`` with ``R(F) = F + W_v2 ReLU(LN(W_v1
  sum_j softmax_j(W_k F_j) F_j))`` a GcBlock (one for the student, one for the teacher, both
  trained, one pair per level).

Every level's loss is summed. These are the authors' code's sums and divisions
(``mmdet/distillation/losses/fgd.py`` of yzd-v/FGD, one ``FeatureLoss`` per FPN level), which
the paper's equations leave implicit; ``tests/losses/test_fgd.py`` checks them
against a per-position loop over the equations. mmrazor has no FGD.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.losses._levels import check_levels, check_width


class ContextBlock(nn.Module):
    """The GcBlock of FGD's global loss: ``R(F) = F + channel_add(context(F))``.

    Args:
        channels (int): ``C`` (at least 2: the bottleneck has ``C // 2``).

    Init as the published code: ``conv_mask`` Kaiming-normal (fan in, bias 0), the last conv of
    ``channel_add`` zero (so ``R`` starts as the identity), the rest PyTorch's default.
    """

    def __init__(self, channels: int):
        super().__init__()
        if channels < 2:
            raise ValueError(f'a GcBlock needs at least 2 channels, got {channels}')
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=1),
            nn.LayerNorm([channels // 2, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // 2, channels, kernel_size=1))
        nn.init.kaiming_normal_(self.conv_mask.weight, mode='fan_in', nonlinearity='relu')
        nn.init.zeros_(self.conv_mask.bias)
        nn.init.zeros_(self.channel_add[-1].weight)
        nn.init.zeros_(self.channel_add[-1].bias)

    def context(self, x: Tensor) -> Tensor:
        """Tensor[B, C, 1, 1]: ``sum_j softmax_j(W_k x_j) x_j`` over the positions ``j``."""
        attn = self.conv_mask(x).flatten(2).softmax(dim=2)  # [B, 1, HW]
        return torch.einsum('bcj,bj->bc', x.flatten(2), attn[:, 0])[..., None, None]

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, C, H, W] -> Tensor[B, C, H, W]."""
        return x + self.channel_add(self.context(x))


def fgd_attention(feat: Tensor, temp: float) -> tuple[Tensor, Tensor]:
    """FGD's spatial and channel attention of a map.

    Args:
        feat (Tensor[B, C, H, W]): A map.
        temp (float): Temperature ``T``.

    Returns:
        tuple: ``spatial (Tensor[B, 1, H, W])``, ``H W softmax_hw(mean_c |F| / T)``, and
        ``channel (Tensor[B, C, 1, 1])``, ``C softmax_c(mean_hw |F| / T)``.
    """
    b, c, h, w = feat.shape
    a = feat.abs()
    spatial = (h * w) * F.softmax(a.mean(1).flatten(1) / temp, dim=1)
    channel = c * F.softmax(a.mean((2, 3)) / temp, dim=1)
    return spatial.view(b, 1, h, w), channel.view(b, c, 1, 1)


def background_weight(fg: Tensor) -> Tensor:
    """Tensor[B, 1, H, W]: ``[fg == 0]`` divided by its count per image (0 where none)."""
    bg = (fg == 0).to(fg.dtype)
    return bg / bg.sum((1, 2, 3), keepdim=True).clamp(min=1)


def fgd_level(student: Tensor, teacher: Tensor, fg: Tensor, gc_student: ContextBlock,
              gc_teacher: ContextBlock, *, temp: float, alpha: float, beta: float,
              gamma: float, lambda_: float) -> Tensor:
    """The FGD loss of one level (see the module docstring for the equations).

    Args:
        student (Tensor[B, C, H, W]): Student map.
        teacher (Tensor[B, C, H, W]): Teacher map (detached here).
        fg (Tensor[B, 1, H, W]): Foreground weight ``M`` of each position (0: background).
        gc_student (ContextBlock): The student's GcBlock of this level.
        gc_teacher (ContextBlock): The teacher's.
        temp, alpha, beta, gamma, lambda_ (float): ``T`` and the four loss weights.

    Returns:
        Tensor[]: ``alpha L_fg + beta L_bg + gamma L_at + lambda L_global``.
    """
    teacher = teacher.detach()
    n = student.shape[0]
    s_sp, s_ch = fgd_attention(student, temp)
    t_sp, t_ch = fgd_attention(teacher, temp)
    fg = fg.to(student.dtype)
    sq = (student - teacher).pow(2) * t_sp * t_ch
    loss_fg = (sq * fg).sum() / n
    loss_bg = (sq * background_weight(fg)).sum() / n
    loss_at = ((s_ch - t_ch).abs().sum() + (s_sp - t_sp).abs().sum()) / n
    loss_global = (gc_student(student) - gc_teacher(teacher)).pow(2).sum() / n
    return alpha * loss_fg + beta * loss_bg + gamma * loss_at + lambda_ * loss_global


def fgd_loss(student: list[Tensor], teacher: list[Tensor], *, weight: list[Tensor],
             gc_student: nn.ModuleList, gc_teacher: nn.ModuleList, temp: float = 0.5,
             alpha: float = 1e-3, beta: float = 5e-4, gamma: float = 5e-4,
             lambda_: float = 5e-6, avg_factor=None) -> Tensor:
    """``sum_l fgd_level(...)`` over the FPN levels.

    Args:
        student (list[Tensor[B, C, H_l, W_l]]): Student maps per level (after the graph's 1x1
            adapter, where the channel counts differ).
        teacher (list[Tensor[B, C, H_l, W_l]]): Teacher maps (detached here).
        weight (list[Tensor[B, 1, H_l, W_l]]): The foreground weight of each position
            (:class:`~distill.regions.FGDRegion`); the background is where it is 0.
        gc_student (nn.ModuleList): One student :class:`ContextBlock` per level.
        gc_teacher (nn.ModuleList): One teacher :class:`ContextBlock` per level.
        temp, alpha, beta, gamma, lambda_ (float): ``T`` and the loss weights (defaults: the
            published GFL / RetinaNet configs).
        avg_factor: Must be None: each level is divided by the batch size (published code).

    Returns:
        Tensor[]: The loss.
    """
    if weight is None:
        raise ValueError('fgd_loss needs the foreground weight of each position: use '
                         "region=dict(type='FGDRegion')")
    check_levels('fgd_loss', student, teacher, weight, avg_factor)
    if not len(gc_student) == len(gc_teacher) == len(student):
        raise ValueError(f'fgd_loss: {len(gc_student)} student and {len(gc_teacher)} teacher '
                         f'GcBlocks for {len(student)} levels')
    total = student[0].new_zeros(())
    for i, (s, t) in enumerate(zip(student, teacher)):
        total = total + fgd_level(s, t, weight[i], gc_student[i], gc_teacher[i], temp=temp,
                                  alpha=alpha, beta=beta, gamma=gamma, lambda_=lambda_)
    return total


class FGDFeatureLoss(nn.Module):
    """Registered module around :func:`fgd_loss`, holding the per-level GcBlocks.

    Args:
        channels (int): Channels of the maps it compares: the teacher's neck ``out_channels``
            (the graph's adapter maps the student's to them). Published: 256.
        num_levels (int): FPN levels, one student and one teacher GcBlock each (published: 5).
        temp (float): Temperature ``T`` of the attentions (published: 0.5).
        alpha_fgd (float): Foreground loss weight (published GFL / RetinaNet: 1e-3).
        beta_fgd (float): Background loss weight (5e-4).
        gamma_fgd (float): Attention loss weight (5e-4).
        lambda_fgd (float): Global loss weight (5e-6).
        loss_weight (float): One factor on the whole loss (default 1: the four weights above
            as published). The published weights were set for COCO's 256-channel maps; on
            another pair the loss's scale differs, and this one knob rescales all four
            together (a sweep: ``tools/sweep_recipe.py fgd --set fgd.loss.loss_weight=...``).
    """

    def __init__(self, channels: int, num_levels: int = 5, temp: float = 0.5,
                 alpha_fgd: float = 1e-3, beta_fgd: float = 5e-4, gamma_fgd: float = 5e-4,
                 lambda_fgd: float = 5e-6, loss_weight: float = 1.0):
        super().__init__()
        if temp <= 0:
            raise ValueError(f'temp must be positive, got {temp}')
        if not loss_weight >= 0:
            raise ValueError(f'loss_weight must be >= 0, got {loss_weight}')
        self.loss_weight = loss_weight
        self.channels = channels
        self.num_levels = num_levels
        self.temp = temp
        self.alpha_fgd, self.beta_fgd = alpha_fgd, beta_fgd
        self.gamma_fgd, self.lambda_fgd = gamma_fgd, lambda_fgd
        self.gc_student = nn.ModuleList(ContextBlock(channels) for _ in range(num_levels))
        self.gc_teacher = nn.ModuleList(ContextBlock(channels) for _ in range(num_levels))

    def forward(self, student: list[Tensor], teacher: list[Tensor], *,
                weight: list[Tensor] | None = None, avg_factor=None) -> Tensor:
        """See :func:`fgd_loss`."""
        check_width('FGDFeatureLoss', student, self.channels, self.num_levels)
        return self.loss_weight * fgd_loss(
            student, teacher, weight=weight, gc_student=self.gc_student,
            gc_teacher=self.gc_teacher, temp=self.temp, alpha=self.alpha_fgd,
            beta=self.beta_fgd, gamma=self.gamma_fgd, lambda_=self.lambda_fgd,
            avg_factor=avg_factor)

    def extra_repr(self) -> str:
        return (f'channels={self.channels}, num_levels={self.num_levels}, temp={self.temp}, '
                f'alpha_fgd={self.alpha_fgd}, beta_fgd={self.beta_fgd}, '
                f'gamma_fgd={self.gamma_fgd}, lambda_fgd={self.lambda_fgd}, '
                f'loss_weight={self.loss_weight}')


def _register():
    from mmrazor.registry import MODELS
    MODELS.register_module(module=FGDFeatureLoss)


_register()
