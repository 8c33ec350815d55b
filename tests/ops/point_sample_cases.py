"""Shared inputs and helpers of the point-set sampling tests (compiled op vs reference)."""

import pytest
import torch

from distill.ops.point_sample import (
    compiled_available,
    point_sample,
    point_sample_reference,
    point_sample_sum,
    use_compiled,
)

needs_ext = pytest.mark.skipif(not compiled_available(),
                               reason='distill._C is not built (the compiled op is missing)')

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-4, atol=1e-4)}

# (B, C, N, H, W): C in 1, 3, 7; H x W in 1x1, 1x5, 7x3, 9x6; N in 1, 4, 9
SHAPES = [(1, 1, 1, 1, 1), (2, 3, 4, 1, 5), (1, 7, 9, 7, 3), (2, 1, 9, 9, 6), (3, 3, 1, 7, 3),
          (1, 7, 4, 1, 1), (2, 7, 1, 9, 6), (1, 3, 9, 1, 5)]


def inputs(b, c, n, h, w, seed, dtype=torch.float64, spread=3.0, off_grid=True):
    """Random features and offsets; ``off_grid``: fractional parts in [0.1, 0.9] (away from the
    integer coordinates where bilinear interpolation has kinks, so one-sided derivatives of the
    two implementations cannot differ by rounding)."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    if off_grid:
        whole = torch.randint(-int(spread), int(spread) + 1, (b, 2 * n, h, w), generator=g)
        points = whole + 0.1 + 0.8 * torch.rand(b, 2 * n, h, w, generator=g, dtype=dtype)
    else:
        points = (torch.rand(b, 2 * n, h, w, generator=g, dtype=dtype) * 2 - 1) * spread
    return feats, points


def spread(shape):
    """Offsets up to 3 pixels, less on small maps (on a 1x1 map the integer parts are 0, so
    every point has the pixel among its neighbours and the comparisons are not all zeros)."""
    return min(3, max(shape[3:]) - 1)


def value_and_grads(fn, tensors, grad_out):
    """``fn(*tensors)`` and the gradients of ``<fn(*tensors), grad_out>`` w.r.t. the tensors."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*leaves)
    grads = torch.autograd.grad((out * grad_out).sum(), leaves)
    return out.detach(), grads


def reference_sum(feats, points, weight, bias=None):
    with use_compiled(False):
        return point_sample_sum(feats, points, weight, bias)


def check_against_reference(feats, points, seed=0, tol=None):
    """Values and both gradients of ``point_sample`` (compiled) against the reference."""
    tol = tol or TOL[feats.dtype]
    b, c, h, w = feats.shape
    g = torch.Generator().manual_seed(seed + 1000)
    grad_out = torch.randn(b, c, points.shape[1] // 2, h, w, generator=g, dtype=feats.dtype)
    out, (gf, gp) = value_and_grads(point_sample, (feats, points), grad_out)
    ref, (rgf, rgp) = value_and_grads(point_sample_reference, (feats, points), grad_out)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(gf, rgf, **tol)
    torch.testing.assert_close(gp, rgp, **tol)
    return out, gf, gp
