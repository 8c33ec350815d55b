"""MGD: masked generative distillation (Yang et al., ECCV 2022).

A random spatial mask drops a fraction ``lambda_mgd`` of the student's positions (all channels
of a dropped position are zeroed), a generation block (3x3 conv, ReLU, 3x3 conv) regenerates
the full map from what is left, and the regenerated map learns the teacher's with a summed
squared error divided by the batch size, times ``alpha_mgd``. Each FPN level has its own
generation block (the published configs and mmrazor's build one connector per level) and the
levels are summed.

The generation blocks are trained: they are children of the loss module, which is a child of
the graph (``DistillGraph.edge_losses``), so the optimizer holds them; they are not part of the
exported student. The masks are drawn from torch's global CPU generator (seeded by the run's
seed) as ``torch.rand(B, 1, H, W)``, level by level, exactly as mmrazor's ``MGDConnector``:
for one generator state the loss equals mmrazor's ``MGDConnector`` + ``MGDLoss`` in value and
gradient (``tests/losses/test_cwd_mgd.py``). Where the student's channels differ from
the teacher's, mmrazor's connector starts with a 1x1 ``align`` conv; here the graph's neck
adapter is that conv.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distill.losses._levels import check_levels, check_width


def generation_block(channels: int) -> nn.Sequential:
    """The MGD generation block: ``Conv3x3 -> ReLU -> Conv3x3``, ``channels`` in and out
    (PyTorch's default init, as the published code and mmrazor)."""
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, channels, 3, padding=1))


def draw_masks(student: list[Tensor], lambda_mgd: float) -> list[Tensor]:
    """One random spatial keep-mask per level, from torch's global CPU generator.

    Args:
        student (list[Tensor[B, C, H_l, W_l]]): The maps to mask (shapes, device, dtype).
        lambda_mgd (float): Fraction of positions dropped (in expectation).

    Returns:
        list[Tensor[B, 1, H_l, W_l]]: 1 where ``u <= 1 - lambda_mgd``, 0 elsewhere, ``u``
        drawn as mmrazor's ``torch.rand((B, 1, H, W))`` (on the CPU, then moved).
    """
    masks = []
    for s in student:
        b, _, h, w = s.shape
        u = torch.rand((b, 1, h, w))
        masks.append((u <= 1 - lambda_mgd).to(device=s.device, dtype=s.dtype))
    return masks


def mgd_loss(student: list[Tensor], teacher: list[Tensor], *, generators: nn.ModuleList,
             lambda_mgd: float = 0.65, masks: list[Tensor] | None = None,
             weight: list[Tensor] | None = None, avg_factor=None) -> Tensor:
    """``sum_l sum((G_l(F_S^l * M^l) - F_T^l)^2) / B`` over the FPN levels.

    Args:
        student (list[Tensor[B, C, H_l, W_l]]): Student maps per level (after the graph's 1x1
            adapter, where the channel counts differ).
        teacher (list[Tensor[B, C, H_l, W_l]]): Teacher maps (detached here).
        generators (nn.ModuleList): One generation block per level (``C`` in and out).
        lambda_mgd (float): Masked fraction (used when ``masks`` is None).
        masks (list[Tensor[B, 1, H_l, W_l]], optional): Keep-masks (1 keeps a position);
            default: drawn by :func:`draw_masks`.
        weight (list[Tensor[B, 1, H_l, W_l]], optional): A region's weight per position: each
            position's squared error is multiplied by it. None or all ones: the published loss.
        avg_factor: Must be None: each level is divided by the batch size (published code).

    Returns:
        Tensor[]: The loss (without ``alpha_mgd``).
    """
    check_levels('mgd_loss', student, teacher, weight, avg_factor)
    if len(generators) != len(student):
        raise ValueError(f'mgd_loss: {len(generators)} generation blocks for '
                         f'{len(student)} levels')
    if masks is None:
        masks = draw_masks(student, lambda_mgd)
    total = student[0].new_zeros(())
    for i, (s, t) in enumerate(zip(student, teacher)):
        sq = (generators[i](s * masks[i]) - t.detach()).pow(2)
        if weight is not None:
            sq = sq * weight[i].to(sq.dtype)
        total = total + sq.sum() / s.shape[0]
    return total


class MGDFeatureLoss(nn.Module):
    """Registered module around :func:`mgd_loss`, holding the per-level generation blocks
    (mmrazor's ``MGDLoss`` keeps its name in the registry).

    Args:
        channels (int): Channels of the maps it compares: the teacher's neck ``out_channels``
            (the graph's adapter maps the student's to them). Paper: 256 (FPN).
        num_levels (int): FPN levels, one generation block each (paper: 5, P3-P7).
        alpha_mgd (float): Loss weight (paper, detection: 2e-5).
        lambda_mgd (float): Masked fraction of the positions (paper, detection: 0.65).
    """

    def __init__(self, channels: int, num_levels: int = 5, alpha_mgd: float = 2e-5,
                 lambda_mgd: float = 0.65):
        super().__init__()
        if not 0 <= lambda_mgd < 1:
            raise ValueError(f'lambda_mgd is the masked fraction, in [0, 1); got {lambda_mgd}')
        self.channels = channels
        self.num_levels = num_levels
        self.alpha_mgd = alpha_mgd
        self.lambda_mgd = lambda_mgd
        self.generation = nn.ModuleList(generation_block(channels) for _ in range(num_levels))

    def forward(self, student: list[Tensor], teacher: list[Tensor], *,
                weight: list[Tensor] | None = None, avg_factor=None,
                masks: list[Tensor] | None = None) -> Tensor:
        """See :func:`mgd_loss`; the result is multiplied by ``alpha_mgd``."""
        check_width('MGDFeatureLoss', student, self.channels, self.num_levels)
        return self.alpha_mgd * mgd_loss(student, teacher, generators=self.generation,
                                         lambda_mgd=self.lambda_mgd, masks=masks,
                                         weight=weight, avg_factor=avg_factor)

    def extra_repr(self) -> str:
        return (f'channels={self.channels}, num_levels={self.num_levels}, '
                f'alpha_mgd={self.alpha_mgd}, lambda_mgd={self.lambda_mgd}')


def _register():
    from mmrazor.registry import MODELS
    MODELS.register_module(module=MGDFeatureLoss)


_register()
