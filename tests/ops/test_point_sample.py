"""Point-set sampling (SALT-Net Eq. 7-8) against a naive bilinear loop with zero padding."""

import math

import pytest
import torch

from distill.ops import point_sample, point_sample_reference, point_sample_sum
from tests.ops.point_sample_cases import inputs


def _naive_sample(feats, points):
    """Bilinear sampling written per point: each of the 4 neighbours of ``(x + dx, y + dy)``
    adds ``weight * feats[..., yi, xi]`` only if ``(xi, yi)`` is inside the map.

    Differentiable in ``feats`` and ``points`` (the weights are ``1 - f`` and ``f`` with
    ``f = p - floor(p)``), so its autograd is a reference for the gradients too.
    """
    b, c, h, w = feats.shape
    n = points.shape[1] // 2
    rows = []
    for bi in range(b):
        for i in range(n):
            for y in range(h):
                for x in range(w):
                    px = x + points[bi, 2 * i, y, x]
                    py = y + points[bi, 2 * i + 1, y, x]
                    x0, y0 = math.floor(px.item()), math.floor(py.item())
                    fx, fy = px - x0, py - y0
                    value = feats.new_zeros(c)
                    for xi, wx in ((x0, 1 - fx), (x0 + 1, fx)):
                        for yi, wy in ((y0, 1 - fy), (y0 + 1, fy)):
                            if 0 <= xi < w and 0 <= yi < h:
                                value = value + wx * wy * feats[bi, :, yi, xi]
                    rows.append(value)
    return torch.stack(rows).reshape(b, n, h, w, c).permute(0, 4, 1, 2, 3)


SHAPES = [(1, 1, 1, 1, 1), (2, 3, 2, 3, 5), (1, 2, 4, 4, 4), (2, 1, 3, 1, 7), (1, 4, 9, 5, 1),
          (1, 2, 3, 1, 1)]


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('shape', SHAPES)
def test_matches_naive_bilinear(shape, dtype):
    feats, points = inputs(*shape, seed=sum(shape), dtype=dtype, off_grid=False)
    out = point_sample_reference(feats, points)
    assert out.shape == (shape[0], shape[1], shape[2], shape[3], shape[4]) and out.dtype == dtype
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    naive = _naive_sample(feats, points)
    torch.testing.assert_close(out, naive, **tol)
    # the public function (the compiled op where built) against the same loop
    torch.testing.assert_close(point_sample(feats, points), naive, **tol)


def test_integer_offsets_give_the_feature_values():
    """Offset (dx, dy) = (1, -1) from (x, y) reads feats[y - 1, x + 1], 0 outside the map."""
    feats, _ = inputs(2, 3, 1, 4, 5, seed=0, dtype=torch.float32, off_grid=False)
    points = torch.tensor([1., -1.]).reshape(1, 2, 1, 1).expand(2, 2, 4, 5)
    out = point_sample_reference(feats, points)[:, :, 0]
    expected = torch.zeros_like(feats)
    expected[:, :, 1:, :-1] = feats[:, :, :-1, 1:]
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    zero = torch.zeros(2, 2, 4, 5)
    torch.testing.assert_close(point_sample_reference(feats, zero)[:, :, 0], feats,
                               rtol=1e-6, atol=1e-6)


def test_points_far_outside_the_map_sample_zero():
    feats = torch.randn(1, 2, 3, 4)
    for dx, dy in ((-50., 0.), (0., 50.), (7.5, -9.25), (-4.5, 0.), (0., 3.5)):
        points = torch.tensor([dx, dy]).reshape(1, 2, 1, 1).expand(1, 2, 3, 4)
        assert (point_sample_reference(feats, points) == 0).all(), (dx, dy)


def test_half_pixel_outside_gets_half_the_border_value():
    """x = -0.5: half of pixel 0, the other half is the zero padding."""
    feats = torch.arange(1., 7.).reshape(1, 1, 2, 3)
    points = torch.zeros(1, 2, 2, 3)
    points[0, 0, :, 0] = -0.5  # locations of column 0 sample x = -0.5
    points[0, 0, :, 2] = 0.5  # locations of column 2 sample x = 2.5
    out = point_sample_reference(feats, points)[0, 0, 0]
    expected = torch.tensor([[0.5, 2., 1.5], [2., 5., 3.]])
    torch.testing.assert_close(out, expected)


def test_one_pixel_map_by_hand():
    """1x1 map of value 8, offset (0.25, -0.5): only pixel (0, 0) is inside, with weight
    (1 - 0.25) * (1 - 0.5) = 0.375 -> 3; offset (-0.75, 0.5): 0.25 * 0.5 * 8 = 1."""
    feats = torch.full((1, 1, 1, 1), 8.)
    points = torch.tensor([0.25, -0.5, -0.75, 0.5]).reshape(1, 4, 1, 1)
    out = point_sample_reference(feats, points)
    torch.testing.assert_close(out.flatten(), torch.tensor([3., 1.]))


@pytest.mark.parametrize('shape, spread', [((1, 2, 2, 3, 4), 3), ((2, 1, 3, 1, 5), 3),
                                           ((1, 3, 2, 1, 1), 0)])
def test_gradients_match_naive_autograd(shape, spread):
    """Float64, off the integer coordinates; spread 0 on a 1-pixel map: offsets in
    [0.1, 0.9], so 3 of the 4 neighbours are the zero padding."""
    feats, points = inputs(*shape, seed=7 + sum(shape), off_grid=True, spread=spread)
    grad_out = torch.randn(*shape[:2], *shape[2:], dtype=torch.float64)
    grads = []
    for fn in (point_sample_reference, _naive_sample):
        f, p = feats.clone().requires_grad_(), points.clone().requires_grad_()
        (fn(f, p) * grad_out).sum().backward()
        grads.append((f.grad, p.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-10, atol=1e-10)
    assert grads[0][1].abs().sum() > 0  # some points are inside the map


def test_gradcheck_off_grid():
    feats, points = inputs(1, 2, 2, 3, 3, seed=3, off_grid=True, spread=1)
    assert torch.autograd.gradcheck(point_sample_reference,
                                    (feats.requires_grad_(), points.requires_grad_()))


@pytest.mark.parametrize('bias', [False, True])
def test_point_sample_sum_is_the_weighted_sum_of_naive_samples(bias):
    feats, points = inputs(2, 3, 4, 3, 5, seed=11, off_grid=False)
    g = torch.Generator().manual_seed(12)
    weight = torch.randn(6, 3, 4, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64) if bias else None
    out = point_sample_sum(feats, points, weight, b)
    naive = _naive_sample(feats, points)  # [B, C, N, H, W]
    expected = torch.zeros(2, 6, 3, 5, dtype=torch.float64)
    for o in range(6):
        for c in range(3):
            for i in range(4):
                expected[:, o] += weight[o, c, i] * naive[:, c, i]
        if bias:
            expected[:, o] += b[o]
    assert out.shape == (2, 6, 3, 5)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_point_sample_sum_gradcheck():
    feats, points = inputs(1, 2, 2, 2, 3, seed=5, off_grid=True, spread=1)
    g = torch.Generator().manual_seed(6)
    weight = torch.randn(3, 2, 2, generator=g, dtype=torch.float64)
    bias = torch.randn(3, generator=g, dtype=torch.float64)
    args = tuple(t.requires_grad_() for t in (feats, points, weight, bias))
    assert torch.autograd.gradcheck(point_sample_sum, args)


@pytest.mark.parametrize('points_shape', [(1, 3, 2, 2), (2, 4, 2, 2), (1, 4, 2, 3),
                                          (1, 4, 3, 2)])
def test_rejects_points_of_the_wrong_shape(points_shape):
    with pytest.raises(ValueError, match='points must be'):
        point_sample_reference(torch.zeros(1, 2, 2, 2), torch.zeros(points_shape))
