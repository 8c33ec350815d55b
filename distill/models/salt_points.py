"""SALT's task-aware point sets (SALT-Net paper Sec. 3.1-3.2, Eq. 2-6).

Coordinates are relative to the predicting location, in feature-map pixels (= strides), in the
layout of :mod:`distill.ops.point_sample`: ``(dx_i, dy_i)`` at channels ``(2i, 2i + 1)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: How the classification points derive from the regression points: Eq. 5 or Eq. 6.
CLS_POINTS = ('exp', 'add')


def regression_points(ltrb: Tensor, scales: Tensor) -> Tensor:
    """The N regression-aware points from the coarse box and the scale factors (Eq. 2-3).

    The coarse box ``C`` is the location's distances to its sides, so its top-left corner is
    ``(x_min, y_min) = (-l, -t)`` and its size ``(w, h) = (l + r, t + b)``. The first 4 points
    are the extreme points on the box's sides, each with one preset coordinate and one learned
    fraction (Sec. 3.1: "four axial coordinates of the extreme points are preset"):
    left ``(x_min, y_min + h s_0)``, top ``(x_min + w s_1, y_min)``, right
    ``(x_min + w, y_min + h s_2)``, bottom ``(x_min + w s_3, y_min + h)``. The other ``N - 4``
    points are ``(x_min + w s_x, y_min + h s_y)`` (Eq. 2) with ``(s_x, s_y)`` the pairs
    ``s_4, s_5``, ``s_6, s_7``, ... So ``2N - 4`` scale factors give ``2N`` coordinates.

    Args:
        ltrb (Tensor[B, 4, H, W]): Coarse box: distances ``(l, t, r, b) >= 0``.
        scales (Tensor[B, 2N - 4, H, W]): Scale factors in ``[0, 1]`` (sigmoid, Eq. 1).

    Returns:
        Tensor[B, 2N, H, W]: The points ``dP^r``.
    """
    if scales.shape[1] % 2 or scales.shape[1] < 4:
        raise ValueError(f'scale factors need 2N - 4 >= 4 channels (even), got '
                         f'{scales.shape[1]}')
    if ltrb.shape[1] != 4:
        raise ValueError(f'the coarse box needs 4 channels (l, t, r, b), got {ltrb.shape[1]}')
    left, top, right, bottom = ltrb.unbind(1)
    x0, y0, w, h = -left, -top, left + right, top + bottom
    s = scales.unbind(1)
    xs = [x0, x0 + w * s[1], x0 + w, x0 + w * s[3]] + [x0 + w * sx for sx in s[4::2]]
    ys = [y0 + h * s[0], y0, y0 + h * s[2], y0 + h] + [y0 + h * sy for sy in s[5::2]]
    return torch.stack([c for xy in zip(xs, ys) for c in xy], dim=1)


def classification_points(reg_points: Tensor, d: Tensor, mode: str = 'exp') -> Tensor:
    """The classification-aware points, with the regression points as a point-set anchor.

    Args:
        reg_points (Tensor[B, 2N, H, W]): ``dP^r``; detached here (Sec. 3.2: "the gradient
            flow of the regression-aware points is detached from the classification branch").
        d (Tensor[B, 2N, H, W]): Disentanglement vectors ``D`` (Eq. 4).
        mode (str): ``'exp'``: ``dP^c = exp(D) * dP^r`` (Eq. 5, the paper's choice);
            ``'add'``: ``dP^c = D + dP^r`` (Eq. 6, its ablation, Table 2).

    Returns:
        Tensor[B, 2N, H, W]: ``dP^c``.
    """
    if mode not in CLS_POINTS:
        raise ValueError(f'cls_points must be one of {CLS_POINTS}, got {mode!r}')
    anchor = reg_points.detach()
    return d.exp() * anchor if mode == 'exp' else d + anchor
