"""The compiled point-sampling op (``distill._C``, ``torch.ops.distill.point_sample_cols``)
against the pure-PyTorch reference (``grid_sample``): values, gradients (gradcheck), odd
layouts, points outside the map or on its border, empty inputs."""

import math

import pytest
import torch

from distill.ops.point_sample import (
    point_sample,
    point_sample_cols,
    point_sample_reference,
    point_sample_sum,
)
from tests.ops.point_sample_cases import (
    SHAPES,
    TOL,
    check_against_reference,
    inputs,
    needs_ext,
    reference_sum,
    spread,
    value_and_grads,
)

# -- values and gradients --------------------------------------------------------------------


@needs_ext
@pytest.mark.usefixtures('compiled_runs')
@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('shape', SHAPES, ids=str)
def test_point_sample_matches_reference(shape, dtype, seed):
    feats, points = inputs(*shape, seed=seed + 10 * sum(shape), dtype=dtype,
                            spread=spread(shape))
    out, gf, gp = check_against_reference(feats, points, seed)
    cols = point_sample_cols(feats, points)
    assert cols.shape == (shape[0], shape[3], shape[4], shape[2], shape[1])
    torch.testing.assert_close(cols, out.permute(0, 3, 4, 2, 1), rtol=0, atol=0)
    torch.testing.assert_close(torch.ops.distill.point_sample_cols(feats, points), cols,
                               rtol=0, atol=0)
    assert out.abs().sum() > 0 and gf.abs().sum() > 0 and gp.abs().sum() > 0


@needs_ext
@pytest.mark.usefixtures('compiled_runs')
@pytest.mark.parametrize('bias', [False, True])
@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('shape', SHAPES, ids=str)
def test_point_sample_sum_matches_reference(shape, dtype, seed, bias):
    b, c, n, h, w = shape
    feats, points = inputs(*shape, seed=seed + 10 * sum(shape), dtype=dtype,
                            spread=spread(shape))
    g = torch.Generator().manual_seed(seed + 77)
    c_out = 5
    weight = torch.randn(c_out, c, n, generator=g, dtype=dtype)
    args = (feats, points, weight) + ((torch.randn(c_out, generator=g, dtype=dtype),)
                                      if bias else ())
    grad_out = torch.randn(b, c_out, h, w, generator=g, dtype=dtype)
    out, grads = value_and_grads(point_sample_sum, args, grad_out)
    ref, ref_grads = value_and_grads(reference_sum, args, grad_out)
    assert out.shape == (b, c_out, h, w) == ref.shape
    tol = TOL[dtype]
    torch.testing.assert_close(out, ref, **tol)
    assert len(grads) == len(args)
    for name, grad, ref_grad in zip(('feats', 'points', 'weight', 'bias'), grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, **tol, msg=lambda m, name=name: f'{name}: {m}')
    assert grads[2].abs().sum() > 0


@needs_ext
@pytest.mark.usefixtures('compiled_runs')
@pytest.mark.parametrize('threads', [1, 2, 4])
def test_backward_slabs_sum_to_the_reference(threads):
    """B = 1: the CPU backward splits the locations into one feature-gradient copy per thread
    (slab) and sums them; the result must not depend on the thread count."""
    feats, points = inputs(1, 5, 4, 9, 6, seed=threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        check_against_reference(feats, points)
    finally:
        torch.set_num_threads(previous)


def _naive_integer(feats, points):
    """Samples at integer coordinates, by hand: the pixel itself (0 outside the map); and, for a
    gradient ``grad`` of the samples, the gradients: the feature gradient scatters ``grad`` into
    that pixel; the point gradient is the forward difference ``D(x + 1, y) - D(x, y)`` (and
    ``D(x, y + 1) - D(x, y)``) of ``D(pixel) = <grad, F(pixel)>`` (0 outside), the derivative of
    the bilinear weights with ``l = p - floor(p) = 0``."""
    b, c, h, w = feats.shape
    n = points.shape[1] // 2

    def pixel(bi, xi, yi):
        return feats[bi, :, yi, xi] if 0 <= xi < w and 0 <= yi < h else feats.new_zeros(c)

    def backward(grad):
        gf, gp = torch.zeros_like(feats), torch.zeros_like(points)
        for bi in range(b):
            for i in range(n):
                for y in range(h):
                    for x in range(w):
                        px = x + int(points[bi, 2 * i, y, x])
                        py = y + int(points[bi, 2 * i + 1, y, x])
                        g = grad[bi, :, i, y, x]
                        if 0 <= px < w and 0 <= py < h:
                            gf[bi, :, py, px] += g
                        d = g @ pixel(bi, px, py)
                        gp[bi, 2 * i, y, x] = g @ pixel(bi, px + 1, py) - d
                        gp[bi, 2 * i + 1, y, x] = g @ pixel(bi, px, py + 1) - d
        return gf, gp

    out = torch.stack([torch.stack([torch.stack([
        torch.stack([pixel(bi, x + int(points[bi, 2 * i, y, x]),
                           y + int(points[bi, 2 * i + 1, y, x])) for x in range(w)], -1)
        for y in range(h)], -2) for i in range(n)], 1) for bi in range(b)])
    return out, backward


@needs_ext
@pytest.mark.usefixtures('compiled_runs')
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('shape', [(2, 3, 4, 5, 4), (1, 1, 9, 1, 5), (1, 2, 3, 1, 1)], ids=str)
def test_integer_offsets_read_the_pixels(shape, dtype):
    """Integer offsets in [-3, 3] (many land on -1, W - 1, W or beyond): the sample is exactly
    the pixel (0 outside), the gradients those of :func:`_naive_integer`."""
    b, c, n, h, w = shape
    g = torch.Generator().manual_seed(sum(shape))
    feats = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    points = torch.randint(-3, 4, (b, 2 * n, h, w), generator=g).to(dtype)
    points[:, :2] = 0  # the first point reads the location itself: never all outside
    grad_out = torch.randn(b, c, n, h, w, generator=g, dtype=dtype)
    out, (gf, gp) = value_and_grads(point_sample, (feats, points), grad_out)
    expected, backward = _naive_integer(feats, points)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)  # bilinear weights exactly 1, 0
    torch.testing.assert_close(out, point_sample_reference(feats, points), **TOL[dtype])
    expected_gf, expected_gp = backward(grad_out)
    torch.testing.assert_close(gf, expected_gf, **TOL[dtype])
    torch.testing.assert_close(gp, expected_gp, **TOL[dtype])
    assert (out == 0).any() and (out != 0).any()  # both inside and outside samples


# -- gradcheck ---------------------------------------------------------------------------------


@needs_ext
@pytest.mark.usefixtures('compiled_runs')
@pytest.mark.parametrize('shape', [(1, 2, 2, 3, 3), (2, 3, 1, 2, 4), (1, 1, 3, 1, 1)], ids=str)
def test_gradcheck_point_sample(shape):
    feats, points = inputs(*shape, seed=sum(shape), spread=1)
    assert torch.autograd.gradcheck(point_sample, (feats.requires_grad_(),
                                                   points.requires_grad_()))


@needs_ext
@pytest.mark.usefixtures('compiled_runs')
@pytest.mark.parametrize('bias', [False, True])
def test_gradcheck_point_sample_sum(bias):
    feats, points = inputs(2, 3, 2, 3, 2, seed=5, spread=1)
    g = torch.Generator().manual_seed(6)
    args = [feats, points, torch.randn(4, 3, 2, generator=g, dtype=torch.float64)]
    if bias:
        args.append(torch.randn(4, generator=g, dtype=torch.float64))
    assert torch.autograd.gradcheck(point_sample_sum, tuple(t.requires_grad_() for t in args))


def _fused(feats, points, weight, tile=0):
    """The fused op (the inference path of point_sample_sum) called directly, with its own
    autograd (columns re-gathered tile by tile in the backward); ``tile``: rows per tile."""
    b, c, h, w = feats.shape
    n = points.shape[1] // 2
    kernel = weight.permute(2, 1, 0).reshape(n * c, weight.shape[0])
    return torch.ops.distill.point_sample_sum(feats, points, kernel, tile).permute(0, 3, 1, 2)


@needs_ext
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('shape', [(2, 3, 4, 5, 4), (1, 64, 9, 48, 48), (3, 16, 9, 20, 20)],
                         ids=str)
def test_fused_op_matches_reference(shape, dtype):
    """Values and gradients of the tiled op with its automatic tiles (1, 64, 9, 48, 48): several
    tiles in the forward (about 1 MiB of columns each)."""
    b, c, n, h, w = shape
    feats, points = inputs(*shape, seed=3, dtype=dtype)
    g = torch.Generator().manual_seed(4)
    weight = torch.randn(5, c, n, generator=g, dtype=dtype)
    grad_out = torch.randn(b, 5, h, w, generator=g, dtype=dtype)
    out, grads = value_and_grads(_fused, (feats, points, weight), grad_out)
    ref, ref_grads = value_and_grads(reference_sum, (feats, points, weight), grad_out)
    tol = TOL[dtype] if dtype == torch.float64 else dict(rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(out, ref, **tol)
    for name, a, e in zip(('feats', 'points', 'weight'), grads, ref_grads):
        torch.testing.assert_close(a, e, **tol, msg=name)
    # the public function takes this path without grad, the columns' path with it
    with torch.no_grad():
        torch.testing.assert_close(point_sample_sum(feats, points, weight), out, **tol)


@needs_ext
@pytest.mark.parametrize('threads', [1, 2, 4])
@pytest.mark.parametrize('tile', [1, 7, 40])
def test_fused_op_tiles(tile, threads):
    """Tiles of 1, 7 and 40 rows on (2, 5, 3, 6, 7) maps (42 locations per image, split into
    1-4 slabs by the thread count): tiles straddle slab and image boundaries, and the kernel's
    gradient accumulates over several tiles and threads."""
    feats, points = inputs(2, 5, 3, 6, 7, seed=tile + threads)
    g = torch.Generator().manual_seed(11)
    weight = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    grad_out = torch.randn(2, 4, 6, 7, generator=g, dtype=torch.float64)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out, grads = value_and_grads(lambda f, p, w: _fused(f, p, w, tile), (feats, points, weight),
                                     grad_out)
    finally:
        torch.set_num_threads(previous)
    ref, ref_grads = value_and_grads(reference_sum, (feats, points, weight), grad_out)
    torch.testing.assert_close(out, ref, **TOL[torch.float64])
    for name, a, e in zip(('feats', 'points', 'weight'), grads, ref_grads):
        torch.testing.assert_close(a, e, **TOL[torch.float64], msg=name)


@needs_ext
def test_gradcheck_fused_op():
    feats, points = inputs(2, 3, 2, 3, 2, seed=7, spread=1)
    weight = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    assert torch.autograd.gradcheck(_fused, (feats.requires_grad_(), points.requires_grad_(),
                                             weight.requires_grad_()))


@needs_ext
def test_opcheck_schema_fake_and_autograd():
    """torch.library.opcheck: schema, fake (meta) kernel, autograd registration and AOT
    dispatch of both ops, on float32, a non-contiguous float64 case and empty inputs."""
    feats, points = inputs(2, 3, 4, 5, 4, seed=0, dtype=torch.float32)
    torch.library.opcheck(torch.ops.distill.point_sample_cols.default,
                          (feats.requires_grad_(), points.requires_grad_()))
    feats, points = inputs(1, 4, 2, 3, 5, seed=1)
    torch.library.opcheck(torch.ops.distill.point_sample_cols.default,
                          (feats.transpose(2, 3).contiguous().transpose(2, 3).requires_grad_(),
                           points.requires_grad_()))
    kernel = torch.randn(2 * 4, 3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.distill.point_sample_sum.default,
                          (feats, points, kernel.requires_grad_()))
    for b, n in ((0, 2), (1, 0)):  # empty batch, no points
        feats, points = inputs(b, 4, n, 3, 5, seed=2)
        torch.library.opcheck(torch.ops.distill.point_sample_sum.default,
                              (feats, points, torch.randn(n * 4, 3, dtype=torch.float64)))


# -- layouts, far and border points, empty inputs ------------------------------------------


@needs_ext
@pytest.mark.usefixtures('compiled_runs')
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_non_contiguousinputs(dtype):
    b, c, n, h, w = 2, 3, 4, 7, 5
    g = torch.Generator().manual_seed(3)
    base = torch.randn(b, h, w, c + 2, generator=g, dtype=dtype)
    feats_permuted = base.permute(0, 3, 1, 2)[:, 1:c + 1]  # a permuted, sliced view
    _, wide = inputs(b, c, 2 * n, h, w, seed=4, dtype=dtype)
    points_strided = wide[:, ::2]  # a slice with a step: (B, 2N, H, W)
    assert not feats_permuted.is_contiguous() and not points_strided.is_contiguous()
    feats_cl = feats_permuted.contiguous().contiguous(memory_format=torch.channels_last)
    assert feats_cl.is_contiguous(memory_format=torch.channels_last)
    points_t = points_strided.contiguous().transpose(2, 3).contiguous().transpose(2, 3)
    dense = (feats_permuted.contiguous(), points_strided.contiguous())
    expected = point_sample(*dense)
    for feats, points in ((feats_permuted, points_strided), (feats_cl, points_strided),
                          (feats_permuted, points_t), (feats_cl, dense[1])):
        out, _, _ = check_against_reference(feats, points)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)  # layout does not matter
        weight = torch.randn(6, c, n, generator=g, dtype=dtype)
        torch.testing.assert_close(point_sample_sum(feats, points, weight),
                                   reference_sum(*dense, weight), **TOL[dtype])


@needs_ext
@pytest.mark.usefixtures('compiled_runs')
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('far', [1e6, -1e6, 1e30, -1e30, 2.0 ** 62])
def test_points_far_outside_match_the_reference(far, dtype):
    """Large finite offsets (some points only, in x or in y): 0 samples, 0 point gradients, as
    the reference; the other points are unaffected."""
    feats, points = inputs(2, 3, 4, 4, 5, seed=8, dtype=dtype)
    g = torch.Generator().manual_seed(9)
    mask = torch.rand(points.shape, generator=g) < 0.3
    points = torch.where(mask, torch.full_like(points, far), points)
    out, _, gp = check_against_reference(feats, points)
    hit = mask.reshape(2, 4, 2, 4, 5).any(2)  # samples with a far coordinate: [B, N, H, W]
    assert hit.any() and (~hit).any()
    assert (out.permute(0, 2, 3, 4, 1)[hit] == 0).all()
    assert (gp.reshape(2, 4, 2, 4, 5).permute(0, 1, 3, 4, 2)[hit] == 0).all()


@needs_ext
@pytest.mark.usefixtures('compiled_runs')
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_nan_and_inf_points_sample_zero_with_zero_gradients(dtype):
    """Documented in point_sample.h (corners): a point with a NaN or infinite coordinate samples
    0 and gets a zero gradient (for both of its coordinates), and adds nothing to the feature
    gradient. The reference gives NaN there, so the expectation is the reference with those
    points moved far outside the map (1e6), where it samples 0 with zero gradients."""
    feats, points = inputs(2, 3, 4, 4, 5, seed=10, dtype=dtype)
    g = torch.Generator().manual_seed(11)
    bad = torch.tensor([math.nan, math.inf, -math.inf], dtype=dtype)
    pick = torch.randint(0, 3, points.shape, generator=g)
    mask = torch.rand(points.shape, generator=g) < 0.3
    points_bad = torch.where(mask, bad[pick], points)
    points_far = torch.where(mask, torch.full_like(points, 1e6), points)
    grad_out = torch.randn(2, 3, 4, 4, 5, generator=g, dtype=dtype)
    out, (gf, gp) = value_and_grads(point_sample, (feats, points_bad), grad_out)
    ref, (rgf, rgp) = value_and_grads(point_sample_reference, (feats, points_far), grad_out)
    for got, expected in ((out, ref), (gf, rgf), (gp, rgp)):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, expected, **TOL[dtype])
    hit = mask.reshape(2, 4, 2, 4, 5).any(2)
    assert hit.any() and (~hit).any()
    assert (out.permute(0, 2, 3, 4, 1)[hit] == 0).all()
    assert (gp.reshape(2, 4, 2, 4, 5).permute(0, 1, 3, 4, 2)[hit] == 0).all()
    # every point NaN / inf: all zero
    for value in (math.nan, math.inf, -math.inf):
        bad = torch.full_like(points, value)
        _, (gf, gp) = value_and_grads(point_sample, (feats, bad), grad_out)
        assert (point_sample(feats, torch.full_like(points, value)) == 0).all()
        assert (gf == 0).all() and (gp == 0).all()


@needs_ext
@pytest.mark.usefixtures('compiled_runs')
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('hw', [(3, 4), (1, 1), (1, 5)], ids=str)
def test_points_on_the_border(hw, dtype):
    """Absolute coordinates x in {-1, -0.5, 0, W - 1, W - 0.5, W} (y likewise), every
    combination as one of the N points of every location. Values and feature gradients match
    the reference everywhere; the x gradient where x is a half-pixel (-0.5, W - 0.5), the y
    gradient where y is (at integers the derivative is one-sided and the reference's coordinate
    normalisation may round to the other side)."""
    h, w = hw
    xs = [-1., -0.5, 0., w - 1., w - 0.5, float(w)]
    ys = [-1., -0.5, 0., h - 1., h - 0.5, float(h)]
    targets = [(tx, ty) for tx in xs for ty in ys]
    n = len(targets)
    b, c = 2, 3
    yy, xx = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype),
                            indexing='ij')
    points = torch.stack([torch.stack([tx - xx, ty - yy]) for tx, ty in targets])
    points = points.reshape(1, 2 * n, h, w).expand(b, -1, -1, -1).contiguous()
    g = torch.Generator().manual_seed(h * w)
    feats = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    grad_out = torch.randn(b, c, n, h, w, generator=g, dtype=dtype)
    out, (gf, gp) = value_and_grads(point_sample, (feats, points), grad_out)
    ref, (rgf, rgp) = value_and_grads(point_sample_reference, (feats, points), grad_out)
    tol = TOL[dtype]
    torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(gf, rgf, **tol)
    for i, (tx, ty) in enumerate(targets):
        if tx - math.floor(tx) == 0.5:
            torch.testing.assert_close(gp[:, 2 * i], rgp[:, 2 * i], **tol)
        if ty - math.floor(ty) == 0.5:
            torch.testing.assert_close(gp[:, 2 * i + 1], rgp[:, 2 * i + 1], **tol)
        if tx in (-1., float(w)) or ty in (-1., float(h)):  # all weight on outside corners
            assert (out[:, :, i] == 0).all(), (tx, ty)
        if 0 <= tx <= w - 1 and 0 <= ty <= h - 1 and tx == int(tx) and ty == int(ty):
            torch.testing.assert_close(out[:, :, i, 0, 0], feats[:, :, int(ty), int(tx)],
                                       rtol=0, atol=0)
    # half a pixel outside: half of the border pixel (the other half is the zero padding)
    i = targets.index((-0.5, 0.))
    torch.testing.assert_close(out[:, :, i, 0, 0], feats[:, :, 0, 0] / 2, **tol)


EMPTY = [(0, 3, 2, 4, 5), (2, 3, 0, 4, 5), (2, 0, 2, 4, 5)]


@needs_ext
@pytest.mark.usefixtures('compiled_runs')
@pytest.mark.parametrize('shape', EMPTY + [(2, 3, 2, 0, 5), (1, 2, 2, 3, 0)], ids=str)
def test_point_sample_of_emptyinputs(shape):
    """B = 0, N = 0, C = 0: the same (empty) outputs and (empty) gradients as the reference;
    H = 0 or W = 0, which grid_sample (the reference) rejects: empty output, empty gradients."""
    b, c, n, h, w = shape
    feats = torch.randn(b, c, h, w, dtype=torch.float64)
    points = torch.randn(b, 2 * n, h, w, dtype=torch.float64)
    grad_out = torch.randn(b, c, n, h, w, dtype=torch.float64)
    out, (gf, gp) = value_and_grads(point_sample, (feats, points), grad_out)
    assert out.shape == (b, c, n, h, w) and gf.shape == feats.shape and gp.shape == points.shape
    assert (gf == 0).all() and (gp == 0).all()
    assert point_sample_cols(feats, points).shape == (b, h, w, n, c)
    if h * w == 0:
        with pytest.raises(RuntimeError, match='non-empty spatial dimensions'):
            point_sample_reference(feats, points)
        return
    ref, (rgf, rgp) = value_and_grads(point_sample_reference, (feats, points), grad_out)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gf, rgf)
    torch.testing.assert_close(gp, rgp)


@needs_ext
@pytest.mark.usefixtures('compiled_runs')
@pytest.mark.parametrize('shape', EMPTY, ids=str)
def test_point_sample_sum_of_emptyinputs(shape):
    """B = 0, N = 0 or C = 0: the reference gives (B, C_out, H, W), the bias where nothing is
    sampled (N = 0 or C = 0), with the gradients of the bias and zero others."""
    b, c, n, h, w = shape
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(b, c, h, w, generator=g, dtype=torch.float64),
            torch.randn(b, 2 * n, h, w, generator=g, dtype=torch.float64),
            torch.randn(4, c, n, generator=g, dtype=torch.float64),
            torch.randn(4, generator=g, dtype=torch.float64))
    grad_out = torch.randn(b, 4, h, w, generator=g, dtype=torch.float64)
    ref, ref_grads = value_and_grads(reference_sum, args, grad_out)
    assert ref.shape == (b, 4, h, w)
    out, grads = value_and_grads(point_sample_sum, args, grad_out)
    torch.testing.assert_close(out, ref)
    for grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad)
