"""3x3 deformable convolutions (DCN, and DCNv2's modulated one) on the point-set sampling op.

A deformable conv samples its K x K taps at ``p + p_k + dp_k`` and sums them with the kernel's
weights (DDOD Eq. 2): exactly :func:`~distill.ops.point_sample.point_sample_sum` with the
points ``p_k + dp_k``. These layers have mmcv's ``DeformConv2dPack`` /
``ModulatedDeformConv2dPack`` parameters, names and initialisation (a checkpoint of one loads
into the other) and their outputs; they run on ``distill._C`` (C++ CPU / CUDA, falling back to
``grid_sample``), where mmcv's CPU im2col is 11-30x slower (``benchmarks/point_sample.py``).
Registered for ``build_conv_layer`` as ``'PSDCN'`` and ``'PSDCNv2'``.

On CUDA tensors they run ``distill._C``'s CUDA kernel by default: on an H200
(``benchmarks/gpu_check.sh``, 2026-12-04) it matched the reference (values, gradients) and the
CPU training step of DDOD and MOD within 2e-5 relative (mmcv's deformable-conv kernels: 6e-2
on the offset conv's bias gradient), and ran 1.2x faster than mmcv's ``DeformConv2d``.
``DISTILL_DCN_CUDA=mmcv`` (or :func:`set_cuda_kernel`) runs mmcv's kernels instead; the
parameters are the same either way, so a checkpoint does not depend on the kernel. On the CPU
ours always runs (mmcv's CPU im2col is the slow one).
"""

from __future__ import annotations

import math
import os

import torch
from mmengine.registry import MODELS
from torch import Tensor, nn

from .point_sample import point_sample_cols, point_sample_sum, points_from_deform_offsets

#: Which kernel runs the layers on CUDA tensors: ``'ours'`` (default, see the module
#: docstring) or ``'mmcv'``.
CUDA_KERNELS = ('mmcv', 'ours')
_cuda_kernel = os.environ.get('DISTILL_DCN_CUDA', 'ours')
if _cuda_kernel not in CUDA_KERNELS:
    raise ValueError(f'DISTILL_DCN_CUDA={_cuda_kernel!r}: must be one of {CUDA_KERNELS}')


def set_cuda_kernel(kernel: str) -> str:
    """Run the deformable convs on CUDA with ``'mmcv'`` or ``'ours'``; returns the previous."""
    global _cuda_kernel
    if kernel not in CUDA_KERNELS:
        raise ValueError(f'deformable-conv CUDA kernel {kernel!r}: must be one of {CUDA_KERNELS}')
    previous, _cuda_kernel = _cuda_kernel, kernel
    return previous


def cuda_kernel() -> str:
    """The kernel the deformable convs run on CUDA tensors (``'mmcv'`` or ``'ours'``)."""
    return _cuda_kernel


class PointSampleDeformConv2d(nn.Module):
    """A K x K deformable conv whose offsets (and masks) come from a conv of its input.

    Args:
        in_channels, out_channels (int): Channels.
        kernel_size (int): K (odd).
        stride, padding, dilation, groups, deform_groups: Only the dense "same" case: 1,
            ``K // 2``, 1, 1, 1 (what the detection heads use).
        bias (bool): Add a bias.
        modulated (bool): DCNv2: a sigmoid mask per tap multiplies each sample.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1,
                 padding=1, dilation=1, groups=1, deform_groups=1, bias=False,
                 modulated: bool = False):
        super().__init__()
        k = kernel_size if isinstance(kernel_size, int) else kernel_size[0]
        same = dict(stride=1, padding=k // 2, dilation=1, groups=1, deform_groups=1)
        got = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                   deform_groups=deform_groups)
        bad = {key: v for key, v in got.items() if (v if isinstance(v, int) else v[0]) != same[key]}
        if bad or k % 2 == 0:
            raise ValueError(f'{type(self).__name__} supports a dense odd-size kernel with '
                             f'{same}; got kernel_size={kernel_size}, {bad}')
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, k
        self.modulated = modulated
        # what mmcv's ConvModule reads from its conv
        self.stride, self.padding, self.dilation = (1, 1), (k // 2, k // 2), (1, 1)
        self.groups, self.transposed, self.output_padding = 1, False, (0, 0)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, k, k))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.conv_offset = nn.Conv2d(in_channels, (3 if modulated else 2) * k * k, k,
                                     padding=k // 2, bias=True)
        self.init_weights()

    def init_weights(self) -> None:
        """mmcv's: uniform weights in +-1/sqrt(C K^2), zero bias, zero offsets (and masks)."""
        stdv = 1.0 / math.sqrt(self.in_channels * self.kernel_size ** 2)
        nn.init.uniform_(self.weight, -stdv, stdv)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x (Tensor[B, C, H, W]) -> Tensor[B, C_out, H, W]``."""
        out = self.conv_offset(x)
        if x.is_cuda and _cuda_kernel == 'mmcv':
            return self.forward_mmcv(x, out)
        n = self.kernel_size ** 2
        weight = self.weight.reshape(self.out_channels, self.in_channels, n)
        if not self.modulated:
            return point_sample_sum(x, points_from_deform_offsets(out, self.kernel_size), weight,
                                    self.bias)
        # mmcv's layout: [offsets of the first half | of the second half | mask logits]
        o1, o2, mask = torch.chunk(out, 3, dim=1)
        points = points_from_deform_offsets(torch.cat([o1, o2], 1), self.kernel_size)
        cols = point_sample_cols(x, points)  # (B, H, W, N, C)
        cols = cols * mask.sigmoid().permute(0, 2, 3, 1)[..., None].to(cols)
        b, h, w = cols.shape[:3]
        kernel = weight.permute(2, 1, 0).reshape(n * self.in_channels, self.out_channels)
        res = (cols.reshape(b * h * w, n * self.in_channels) @ kernel.to(cols))
        res = res.reshape(b, h, w, self.out_channels)
        if self.bias is not None:
            res = res + self.bias
        return res.permute(0, 3, 1, 2)

    def forward_mmcv(self, x: Tensor, out: Tensor) -> Tensor:
        """The same layer on mmcv's kernels (``deform_conv2d`` / ``modulated_deform_conv2d``,
        as mmcv's ``DeformConv2dPack`` / ``ModulatedDeformConv2dPack`` call them), from the
        offset conv's output ``out``; any device mmcv's ops were built for."""
        from mmcv.ops import deform_conv2d, modulated_deform_conv2d

        pad = self.kernel_size // 2
        if self.modulated:
            o1, o2, mask = torch.chunk(out, 3, dim=1)
            return modulated_deform_conv2d(x, torch.cat([o1, o2], 1), mask.sigmoid(),
                                           self.weight, self.bias, 1, pad, 1, 1, 1)
        res = deform_conv2d(x, out, self.weight, 1, pad, 1, 1, 1)
        return res if self.bias is None else res + self.bias[None, :, None, None]

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, '
                f'modulated={self.modulated}, bias={self.bias is not None}')


def zero_offsets(module: nn.Module) -> None:
    """Zero the offset (and mask) convs of every deformable conv under ``module``: a head's
    Normal(0.01) init reaches them too, and each should start as the plain conv it replaces,
    as mmcv inits it (the DCNv2 mask at 0.5)."""
    for m in module.modules():
        if hasattr(m, 'conv_offset'):
            nn.init.zeros_(m.conv_offset.weight)
            nn.init.zeros_(m.conv_offset.bias)


@MODELS.register_module('PSDCN')
class PSDCN(PointSampleDeformConv2d):
    """DCN (v1) on the point-set sampling op; mmcv ``DeformConv2dPack``'s parameters."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, modulated=False, **kwargs)


@MODELS.register_module('PSDCNv2')
class PSDCNv2(PointSampleDeformConv2d):
    """Modulated DCN (v2) on the point-set sampling op; mmcv ``ModulatedDeformConv2dPack``'s
    parameters."""

    def __init__(self, *args, bias=True, **kwargs):
        super().__init__(*args, bias=bias, modulated=True, **kwargs)
