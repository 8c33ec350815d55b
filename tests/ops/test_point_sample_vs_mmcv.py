"""The point-set alignment against an independent implementation: mmcv's ``DeformConv2d`` (its
own bilinear sampling and im2col, C++ on CPU) with offsets that place its 3x3 kernel's samples
at the same points (``deform_conv_offsets``); values and gradients of features, points and
weights, for the compiled op and the reference alike."""

import pytest
import torch
from mmcv.ops import DeformConv2d

from distill.ops.point_sample import (
    compiled_available,
    deform_conv_offsets,
    point_sample_sum,
    use_compiled,
)


def test_offsets_by_hand():
    """Kernel point k = 4 (the centre, grid (0, 0)) keeps (dy, dx); k = 0 (grid (-1, -1)) gets
    (dy + 1, dx + 1); k = 5 (grid (0, +1)) gets (dy, dx - 1)."""
    points = torch.zeros(1, 18, 1, 1)
    points[0, 8:10, 0, 0] = torch.tensor([0.25, -0.5])  # point 4: dx, dy
    points[0, 0:2, 0, 0] = torch.tensor([2.0, 3.0])  # point 0
    points[0, 10:12, 0, 0] = torch.tensor([1.5, 0.0])  # point 5
    off = deform_conv_offsets(points)[0, :, 0, 0]
    assert off[8:10].tolist() == [-0.5, 0.25]
    assert off[0:2].tolist() == [4.0, 3.0]
    assert off[10:12].tolist() == [0.0, 0.5]
    with pytest.raises(ValueError, match='3x3 kernel has 9 points'):
        deform_conv_offsets(torch.zeros(1, 8, 2, 2))


@pytest.mark.parametrize('compiled', [
    pytest.param(True, marks=pytest.mark.skipif(not compiled_available(),
                                                reason='distill._C not built')),
    False])
@pytest.mark.parametrize('shape', [(2, 5, 7, 6), (1, 16, 4, 9), (3, 3, 1, 1)])
def test_point_sample_sum_equals_mmcv_deform_conv(compiled, shape):
    b, c, h, w = shape
    g = torch.Generator().manual_seed(h * w + c)
    feats = torch.randn(b, c, h, w, generator=g, requires_grad=True)
    points = torch.randn(b, 18, h, w, generator=g) * 2
    # fractional parts in [0.1, 0.9]: away from the kinks of bilinear interpolation
    points = (points.floor() + 0.1 + 0.8 * torch.rand(points.shape, generator=g)).requires_grad_()
    weight = torch.randn(4, c, 9, generator=g, requires_grad=True)
    with use_compiled(compiled):
        out = point_sample_sum(feats, points, weight)
    dcn = DeformConv2d(c, 4, 3, padding=1, bias=False)
    dcn.weight.data.copy_(weight.detach().reshape(4, c, 3, 3))
    ref = dcn(feats, deform_conv_offsets(points))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    grad = torch.randn(out.shape, generator=g)
    got = torch.autograd.grad(out, (feats, points, weight), grad)
    want = torch.autograd.grad(ref, (feats, points, dcn.weight), grad)
    for name, a, e in zip(('feats', 'points', 'weight'), got, want):
        torch.testing.assert_close(a, e.reshape(a.shape), rtol=1e-3, atol=1e-3, msg=name)
