"""Bilinear point-set sampling (SALT-Net Eq. 7-8): N points per location, relative to it.

Layout: ``points (Tensor[B, 2N, H, W])`` holds ``(dx_i, dy_i)`` at channels ``(2i, 2i + 1)``, in
feature-map pixels relative to the location ``(x, y)`` that predicts (Eq. 7: ``p + dp_i``; the
paper's regular grid ``p_i`` is folded into ``dp_i``, since SALT's points are not a deformed
3x3 grid). Outside the map the feature is 0 (zero padding), as a deformable convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def point_sample_reference(feats: Tensor, points: Tensor) -> Tensor:
    """Sample ``feats`` at ``(x + dx_i, y + dy_i)`` of every location, bilinearly (Eq. 8).

    Args:
        feats (Tensor[B, C, H, W]): Features.
        points (Tensor[B, 2N, H, W]): Offsets ``(dx_i, dy_i)`` of the N points per location,
            in feature-map pixels.

    Returns:
        Tensor[B, C, N, H, W]: ``F(p + dp_i)``, zero outside the map.
    """
    b, c, h, w = feats.shape
    n = points.shape[1] // 2
    if points.shape[1] != 2 * n or points.shape[0] != b or points.shape[2:] != feats.shape[2:]:
        raise ValueError(f'points must be (B, 2N, H, W) = ({b}, 2N, {h}, {w}), got '
                         f'{tuple(points.shape)}')
    ys, xs = torch.meshgrid(torch.arange(h, dtype=points.dtype, device=points.device),
                            torch.arange(w, dtype=points.dtype, device=points.device),
                            indexing='ij')
    offsets = points.reshape(b, n, 2, h, w)
    x = xs + offsets[:, :, 0]  # [B, N, H, W]
    y = ys + offsets[:, :, 1]
    # grid_sample with align_corners=False puts pixel centres at (2i + 1) / size - 1, so pixel
    # coordinate i samples pixel i exactly (and a 1-pixel map does not divide by zero)
    grid = torch.stack([(2 * x + 1) / w - 1, (2 * y + 1) / h - 1], dim=-1)
    out = F.grid_sample(feats, grid.reshape(b, n * h, w, 2).to(feats.dtype), mode='bilinear',
                        padding_mode='zeros', align_corners=False)
    return out.reshape(b, c, n, h, w)


def point_sample(feats: Tensor, points: Tensor) -> Tensor:
    """Point-set sampling, see :func:`point_sample_reference` (the compiled op's interface)."""
    return point_sample_reference(feats, points)


def point_sample_sum(feats: Tensor, points: Tensor, weight: Tensor,
                     bias: Tensor | None = None) -> Tensor:
    """Sampled points summed with per-point weights: SALT's feature alignment (Eq. 8 + the
    alignment convolution), i.e. a deformable convolution whose kernel is the point set.

    Args:
        feats (Tensor[B, C, H, W]): Features.
        points (Tensor[B, 2N, H, W]): Point offsets, see :func:`point_sample_reference`.
        weight (Tensor[C_out, C, N]): The weights of each point.
        bias (Tensor[C_out], optional): Bias.

    Returns:
        Tensor[B, C_out, H, W]: ``sum_i W_i F(p + dp_i) (+ bias)``.
    """
    out = torch.einsum('bcnhw,ocn->bohw', point_sample(feats, points), weight)
    return out if bias is None else out + bias[None, :, None, None]
