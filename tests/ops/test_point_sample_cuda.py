"""The CUDA kernels of the point-set sampling op: their source compiles with nvcc on any machine
that has it (a CPU-only torch included), and on a GPU they agree with the reference."""

import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torch
from torch.utils.cpp_extension import CUDA_HOME, include_paths

from distill.ops.point_sample import (
    compiled_available,
    point_sample,
    point_sample_reference,
    point_sample_sum,
    use_compiled,
)

ROOT = Path(__file__).resolve().parents[2]
CUDA_SOURCES = sorted((ROOT / 'ops' / 'csrc').rglob('*.cu'))
NVCC = shutil.which('nvcc') or (os.path.join(CUDA_HOME, 'bin', 'nvcc') if CUDA_HOME else None)
needs_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and compiled_available('cuda')),
                               reason='needs a GPU and distill._C built with its CUDA kernels')


@pytest.mark.skipif(NVCC is None, reason='nvcc not installed')
@pytest.mark.parametrize('source', CUDA_SOURCES, ids=lambda p: p.name)
def test_cuda_source_compiles_with_nvcc(source, tmp_path):
    """Compile to an object file for an H100 (sm_90) with torch's flags for extensions. A CPU-only
    torch ships the c10/cuda headers but not the one CMake generates for a CUDA build
    (cuda_cmake_macros.h): a stand-in with the shared-library define replaces it."""
    includes = include_paths()
    if not any(Path(d, 'c10/cuda/impl/cuda_cmake_macros.h').exists() for d in includes):
        shim = tmp_path / 'shim' / 'c10' / 'cuda' / 'impl'
        shim.mkdir(parents=True)
        (shim / 'cuda_cmake_macros.h').write_text(
            '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n')
        includes = includes + [str(tmp_path / 'shim')]
    cmd = [NVCC, '-c', str(source), '-o', str(tmp_path / 'out.o'), '-std=c++20', '-O1',
           '-gencode', 'arch=compute_90,code=sm_90', '-Xcompiler', '-fPIC', '-DWITH_CUDA',
           '--expt-relaxed-constexpr', '-D__CUDA_NO_HALF_OPERATORS__',
           '-D__CUDA_NO_HALF_CONVERSIONS__', '-D__CUDA_NO_HALF2_OPERATORS__',
           f'-I{sysconfig.get_paths()["include"]}'] + [f'-I{d}' for d in includes]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    ours = [line for line in run.stderr.splitlines()
            if 'ops/csrc' in line and re.search(r'warning|error', line)]
    assert not ours, '\n'.join(ours)
    assert (tmp_path / 'out.o').stat().st_size > 0


def _inputs(b, c, n, h, w, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    points = torch.randn(b, 2 * n, h, w, generator=g, dtype=torch.float64) * 3
    # keep the fractional parts away from integer coordinates (one-sided gradients there)
    points = points.floor() + 0.1 + 0.8 * torch.rand(points.shape, generator=g, dtype=torch.float64)
    return feats.to('cuda', dtype), points.to('cuda', dtype)


@needs_gpu
@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-10), (torch.float32, 1e-4),
                                       (torch.float16, 1e-2)])
@pytest.mark.parametrize('shape', [(2, 7, 9, 9, 6), (1, 64, 5, 1, 1), (3, 33, 1, 4, 17)])
def test_cuda_matches_reference(dtype, tol, shape):
    feats, points = _inputs(*shape, dtype=dtype, seed=sum(shape))
    feats.requires_grad_()
    points.requires_grad_()
    out = point_sample(feats, points)
    # the reference in float64 on the same device is the definition
    ref = point_sample_reference(feats.double(), points.double())
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (feats, points), grad)
    want = torch.autograd.grad(ref, (feats, points), grad.double())
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b.double(), rtol=tol, atol=10 * tol)


@needs_gpu
def test_cuda_gradcheck_and_fused_sum():
    feats, points = _inputs(2, 5, 4, 6, 7, torch.float64, seed=0)
    weight = torch.randn(3, 5, 4, dtype=torch.float64, device='cuda')
    args = (feats.requires_grad_(), points.requires_grad_(), weight.requires_grad_())
    assert torch.autograd.gradcheck(point_sample_sum, args)
    out = point_sample_sum(*args)
    with use_compiled(False):
        ref = point_sample_sum(*args)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
