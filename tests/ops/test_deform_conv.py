"""The deformable convs on the point-set sampling op against mmcv's DeformConv2dPack and
ModulatedDeformConv2dPack with the same parameters: outputs and gradients (input, weight,
offset conv), with the compiled op and with the reference."""

import os

import pytest
import torch
from mmcv.cnn import build_conv_layer
from mmcv.ops import DeformConv2dPack, ModulatedDeformConv2dPack

from distill.ops import PSDCN, PSDCNv2, deform_conv, points_from_deform_offsets
from distill.ops.point_sample import compiled_available, deform_conv_offsets, use_compiled


def off_grid(layer, bias: bool):
    """Non-zero offsets and masks (so that the sampling is off the grid), and a bias."""
    torch.nn.init.normal_(layer.conv_offset.weight, std=0.3)
    torch.nn.init.normal_(layer.conv_offset.bias, std=0.5)
    if bias:
        torch.nn.init.normal_(layer.bias)
    return layer


@pytest.mark.parametrize('compiled', [
    pytest.param(True, marks=pytest.mark.skipif(not compiled_available(),
                                                reason='distill._C not built')), False])
@pytest.mark.parametrize('ours_cls,mmcv_cls,bias', [(PSDCN, DeformConv2dPack, False),
                                                    (PSDCNv2, ModulatedDeformConv2dPack, True)])
def test_equals_mmcv(ours_cls, mmcv_cls, bias, compiled):
    torch.manual_seed(0)
    ref = off_grid(mmcv_cls(5, 7, 3, padding=1, bias=bias), bias)
    ours = ours_cls(5, 7, 3, padding=1, bias=bias)
    ours.load_state_dict(ref.state_dict())  # the same names: checkpoints interchange
    x = torch.randn(2, 5, 9, 6)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    with use_compiled(compiled):
        a = ours(xa)
    b = ref(xb)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    g = torch.randn_like(b)
    ga = torch.autograd.grad(a, [xa, ours.weight, ours.conv_offset.weight], g)
    gb = torch.autograd.grad(b, [xb, ref.weight, ref.conv_offset.weight], g)
    for name, u, v in zip(('input', 'weight', 'offset conv'), ga, gb):
        torch.testing.assert_close(u, v, rtol=1e-3, atol=1e-4, msg=name)


def test_init_is_mmcvs_and_the_offsets_round_trip():
    conv = build_conv_layer(dict(type='PSDCNv2'), 4, 6, 3, padding=1)
    assert isinstance(conv, PSDCNv2) and conv.conv_offset.out_channels == 27
    assert conv.conv_offset.weight.abs().sum() == 0 and conv.weight.abs().max() <= 1 / 6
    pts = torch.randn(2, 18, 3, 4)
    torch.testing.assert_close(points_from_deform_offsets(deform_conv_offsets(pts)), pts)
    with pytest.raises(ValueError, match='dense odd-size kernel'):
        PSDCN(4, 4, 3, stride=2, padding=1)


@pytest.mark.parametrize('cls,bias', [(PSDCN, False), (PSDCN, True), (PSDCNv2, True),
                                      (PSDCNv2, False)])
def test_mmcv_kernel_path_equals_ours(cls, bias):
    """``forward_mmcv`` (what runs on CUDA by default) gives the layer's own output and
    gradients, the bias of a v1 layer included (mmcv's ``deform_conv2d`` has none)."""
    torch.manual_seed(1)
    layer = off_grid(cls(4, 6, 3, padding=1, bias=bias), bias)
    x = torch.randn(2, 4, 7, 5)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a = layer(xa)
    b = layer.forward_mmcv(xb, layer.conv_offset(xb))
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    params = [layer.weight, layer.conv_offset.weight] + ([layer.bias] if bias else [])
    g = torch.randn_like(a)
    for u, v in zip(torch.autograd.grad(a, [xa, *params], g),
                    torch.autograd.grad(b, [xb, *params], g)):
        torch.testing.assert_close(v, u, rtol=1e-3, atol=1e-4)


def test_cuda_kernel_switch():
    # ours: the default since gpu_check.sh passed on an H200 (DISTILL_DCN_CUDA sets another)
    default = os.environ.get('DISTILL_DCN_CUDA', 'ours')
    assert deform_conv.cuda_kernel() == default
    assert deform_conv.set_cuda_kernel('mmcv') == default
    try:
        assert deform_conv.cuda_kernel() == 'mmcv'
        with pytest.raises(ValueError, match=r"kernel 'cudnn': must be one of \('mmcv', 'ours'\)"):
            deform_conv.set_cuda_kernel('cudnn')
        assert deform_conv.cuda_kernel() == 'mmcv'
    finally:
        deform_conv.set_cuda_kernel(default)


@pytest.mark.skipif(not (torch.cuda.is_available() and compiled_available('cuda')),
                    reason='needs a GPU and distill._C built with its CUDA kernels')
@pytest.mark.parametrize('cls,bias', [(PSDCN, False), (PSDCNv2, True)])
def test_cuda_kernels_agree(cls, bias):
    """On a GPU, the default (mmcv's kernels) and ours give the same output and the same
    gradients of the input, the weight, the offset conv and the bias."""
    torch.manual_seed(2)
    layer = off_grid(cls(4, 6, 3, padding=1, bias=bias), bias).cuda()
    x = torch.randn(2, 4, 7, 5, device='cuda')
    params = [layer.weight, layer.conv_offset.weight, layer.conv_offset.bias] + (
        [layer.bias] if bias else [])
    g = torch.randn(2, 6, 7, 5, device='cuda')

    def run(kernel):
        previous = deform_conv.set_cuda_kernel(kernel)
        try:
            xi = x.clone().requires_grad_()
            out = layer(xi)
            return out, torch.autograd.grad(out, [xi, *params], g)
        finally:
            deform_conv.set_cuda_kernel(previous)

    (a, ga), (b, gb) = run('mmcv'), run('ours')
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    names = ['input', 'weight', 'offset conv weight', 'offset conv bias', 'bias']
    for name, u, v in zip(names, ga, gb):
        torch.testing.assert_close(v, u, rtol=1e-3, atol=1e-4, msg=name)
