"""Bilinear point-set sampling (SALT-Net Eq. 7-8): N points per location, relative to it.

Layout: ``points (Tensor[B, 2N, H, W])`` holds ``(dx_i, dy_i)`` at channels ``(2i, 2i + 1)``, in
feature-map pixels relative to the location ``(x, y)`` that predicts (Eq. 7: ``p + dp_i``; the
paper's regular grid ``p_i`` is folded into ``dp_i``, since SALT's points are not a deformed
3x3 grid). Outside the map the feature is 0 (zero padding), as a deformable convolution. A NaN
or infinite point samples 0 with zero gradients in the compiled op (the reference gives NaN).

Two implementations behind one interface:

* ``distill._C`` (``ops/csrc/point_sample``): the compiled op
  ``torch.ops.distill.point_sample_cols`` (C++ CPU kernel, CUDA kernel where built), with
  autograd and a fake implementation, so it also runs under ``torch.compile``. It works
  **channels-last**: it gathers, for every location, the N sampled C-vectors into
  ``cols (Tensor[B, H, W, N, C])``. Each bilinear sample then reads 4 contiguous C-vectors
  (instead of 4 scattered values per channel plane), the inner loops run over contiguous
  channels (vectorised on CPU, coalesced on GPU), and the alignment's per-point weighted sum
  is one GEMM ``(B*H*W, N*C) x (N*C, C_out)`` on the columns with no transpose: the im2col
  layout of a deformable convolution, with the sampling point set as its kernel.
* :func:`point_sample_reference`: ``torch.nn.functional.grid_sample`` + ``einsum``, the
  definition the compiled op is tested against. It is used when the extension is not built,
  on a device it was not built for, for a dtype it does not cover (CPU: float32/float64;
  CUDA: also float16), or when :func:`use_compiled` turns the op off; a warning says so once.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.ops.extension import compiled_enabled, load_extension
from distill.ops.extension import use_compiled as use_compiled  # re-exported

_C, _UNAVAILABLE = load_extension()

_DTYPES = {'cpu': (torch.float32, torch.float64),
           'cuda': (torch.float32, torch.float64, torch.float16)}
_state = {'warned': False}


def compiled_available(device: str | torch.device = 'cpu') -> bool:
    """Whether the compiled op runs on ``device`` (the extension is built for it)."""
    kind = torch.device(device).type
    return _C is not None and (kind == 'cpu' or (kind == 'cuda' and _C.with_cuda))


def _promote(*tensors: Tensor) -> list:
    """The tensors in their promoted floating dtype (mixed precision: e.g. fp16 features with
    fp32 points or weights run in fp32, rather than rounding the sub-pixel points to fp16)."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return [t.to(dtype) for t in tensors]


def _compiled(feats: Tensor, points: Tensor) -> bool:
    """Whether this call goes to the compiled op; warns once when the extension cannot serve it."""
    if not compiled_enabled():
        return False
    device = feats.device.type
    reason = None
    if _C is None:
        reason = _UNAVAILABLE
    elif not compiled_available(device):
        reason = f'distill._C was built without {device} kernels'
    elif feats.dtype not in _DTYPES.get(device, ()):
        reason = (f'the compiled op has no {device} kernel for {feats.dtype} (it covers '
                  f'{_DTYPES.get(device, ())})')
    if reason is None:
        return True
    if not _state['warned']:
        _state['warned'] = True
        hint = (' Build it with `pip install --no-build-isolation -e .` (make env does).'
                if _C is None else '')
        warnings.warn(f'distill.ops.point_sample: {reason}; using the pure-PyTorch reference '
                      f'(grid_sample), which is slower (warned once).{hint}', stacklevel=3)
    return False


if _C is not None:
    @torch.library.register_fake('distill::point_sample_cols')
    def _point_sample_cols_fake(feats: Tensor, points: Tensor) -> Tensor:
        b, c, h, w = feats.shape
        return feats.new_empty(b, h, w, points.shape[1] // 2, c)

    @torch.library.register_fake('distill::point_sample_cols_backward')
    def _point_sample_cols_backward_fake(grad: Tensor, feats: Tensor, points: Tensor):
        # the kernels return channels-last gradients, as (B, C, H, W) / (B, 2N, H, W) views
        return (torch.empty_like(feats, memory_format=torch.channels_last),
                torch.empty_like(points, memory_format=torch.channels_last))

    @torch.library.register_fake('distill::point_sample_sum')
    def _point_sample_sum_fake(feats: Tensor, points: Tensor, kernel: Tensor,
                               tile: int = 0) -> Tensor:
        b, _, h, w = feats.shape
        return feats.new_empty(b, h, w, kernel.shape[1])

    @torch.library.register_fake('distill::point_sample_sum_backward')
    def _point_sample_sum_backward_fake(grad: Tensor, feats: Tensor, points: Tensor,
                                        kernel: Tensor, tile: int = 0):
        # the kernel's gradient is contiguous whatever the kernel's strides
        return (torch.empty_like(feats, memory_format=torch.channels_last),
                torch.empty_like(points, memory_format=torch.channels_last),
                kernel.new_empty(kernel.shape))

    def _save_inputs(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def _cols_backward(ctx, grad: Tensor):
        return tuple(torch.ops.distill.point_sample_cols_backward(grad, *ctx.saved_tensors))

    def _save_sum(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:3])
        ctx.tile = inputs[3] if len(inputs) > 3 else 0

    def _sum_backward(ctx, grad: Tensor):
        grads = torch.ops.distill.point_sample_sum_backward(grad, *ctx.saved_tensors, ctx.tile)
        return (*grads, None)

    torch.library.register_autograd('distill::point_sample_cols', _cols_backward,
                                    setup_context=_save_inputs)
    torch.library.register_autograd('distill::point_sample_sum', _sum_backward,
                                    setup_context=_save_sum)


def point_sample_cols(feats: Tensor, points: Tensor) -> Tensor:
    """The N samples of every location, channels-last (the compiled op's own output).

    Args:
        feats (Tensor[B, C, H, W]): Features.
        points (Tensor[B, 2N, H, W]): Point offsets, see :func:`point_sample_reference`.

    Returns:
        Tensor[B, H, W, N, C]: ``F(p + dp_i)``, zero outside the map.
    """
    feats, points = _promote(feats, points)
    if _compiled(feats, points):
        return torch.ops.distill.point_sample_cols(feats, points)
    return point_sample_reference(feats, points).permute(0, 3, 4, 2, 1)


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
    """Point-set sampling with the layout of :func:`point_sample_reference`, by the compiled
    op where it runs (a channels-last view of its columns, not a copy). Features and points of
    two dtypes run in the promoted one."""
    feats, points = _promote(feats, points)
    if _compiled(feats, points):
        return torch.ops.distill.point_sample_cols(feats, points).permute(0, 4, 3, 1, 2)
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
        Tensor[B, C_out, H, W]: ``sum_i W_i F(p + dp_i) (+ bias)``, in the promoted dtype of
        ``feats``, ``points`` and ``weight``.
    """
    feats, points, weight = _promote(feats, points, weight)
    if not _compiled(feats, points):
        out = torch.einsum('bcnhw,ocn->bohw', point_sample_reference(feats, points), weight)
        return out if bias is None else out + bias[None, :, None, None]
    b, c, h, w = feats.shape
    n = points.shape[1] // 2
    if weight.shape != (weight.shape[0], c, n):
        raise ValueError(f'weight must be (C_out, C, N) = (C_out, {c}, {n}), got '
                         f'{tuple(weight.shape)}')
    c_out = weight.shape[0]
    # the kernel (N*C, C_out) has its rows ordered (n, c), as the columns (explicit sizes, not
    # -1: any of them may be 0)
    kernel = weight.permute(2, 1, 0).reshape(n * c, c_out)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (feats, points, weight)):
        # training: the columns (B*H*W, N*C) are kept for the kernel's gradient, and the GEMMs
        # of the backward run on them whole (re-gathering tiles to save their memory measured
        # slower at C = 256: benchmarks/README.md)
        cols = torch.ops.distill.point_sample_cols(feats, points).reshape(b * h * w, n * c)
        out = (cols @ kernel).reshape(b, h, w, c_out)
    else:
        # inference: fused tile by tile, the columns never exist whole
        out = torch.ops.distill.point_sample_sum(feats, points, kernel)
    if bias is not None:
        out = out + bias
    # (B, H, W, C_out) -> (B, C_out, H, W) as a channels-last view (GN and convs take it as is)
    return out.permute(0, 3, 1, 2)


def deform_conv_offsets(points: Tensor, kernel_size: int = 3) -> Tensor:
    """The offsets that make a deformable convolution (mmcv's ``DeformConv2d``, stride 1,
    padding ``kernel_size // 2``, dilation 1) sample this point set: its kernel point
    ``k = i * K + j`` samples ``(y + i - K // 2 + off[2k], x + j - K // 2 + off[2k + 1])`` (row
    first), ours ``(y + dy_k, x + dx_k)``. With the weight ``W.reshape(C_out, C, K, K)`` the
    convolution equals :func:`point_sample_sum` (the published SALT-Net code's realisation of
    the alignment; ``benchmarks/point_sample.py`` times the two).

    Args:
        points (Tensor[B, 2N, H, W]): Point offsets with ``N = K * K``.
        kernel_size (int): K.

    Returns:
        Tensor[B, 2N, H, W]: The deformable convolution's offsets, ``(dy, dx)`` per kernel point.
    """
    b, two_n, h, w = points.shape
    n = kernel_size * kernel_size
    if two_n != 2 * n:
        raise ValueError(f'a {kernel_size}x{kernel_size} kernel has {n} points; points has '
                         f'{two_n // 2}')
    grid_x, grid_y = _kernel_grid(kernel_size, points)
    pts = points.reshape(b, n, 2, h, w)
    return torch.stack([pts[:, :, 1] - grid_y, pts[:, :, 0] - grid_x], dim=2).reshape(b, 2 * n,
                                                                                       h, w)


def points_from_deform_offsets(offsets: Tensor, kernel_size: int = 3) -> Tensor:
    """Inverse of :func:`deform_conv_offsets`: the points a deformable conv with these offsets
    samples, relative to each location.

    Args:
        offsets (Tensor[B, 2N, H, W]): mmcv's offsets, ``(dy, dx)`` per kernel point
            ``k = i * K + j`` (row first), ``N = K * K``.

    Returns:
        Tensor[B, 2N, H, W]: ``(dx_k, dy_k) = (j - K // 2 + off_x, i - K // 2 + off_y)``.
    """
    b, two_n, h, w = offsets.shape
    grid_x, grid_y = _kernel_grid(kernel_size, offsets)
    off = offsets.reshape(b, kernel_size * kernel_size, 2, h, w)
    return torch.stack([off[:, :, 1] + grid_x, off[:, :, 0] + grid_y], 2).reshape(b, two_n, h, w)


def _kernel_grid(kernel_size: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """The regular taps of a K x K kernel, ``(j - K // 2, i - K // 2)`` of tap ``k = i K + j``.

    Returns:
        tuple: ``grid_x``, ``grid_y`` (Tensor[K * K, 1, 1], ``like``'s dtype and device).
    """
    k = torch.arange(kernel_size * kernel_size, device=like.device)
    grid_y = (k // kernel_size - kernel_size // 2).to(like.dtype)[:, None, None]
    grid_x = (k % kernel_size - kernel_size // 2).to(like.dtype)[:, None, None]
    return grid_x, grid_y
