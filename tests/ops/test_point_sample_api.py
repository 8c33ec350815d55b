"""The compiled point-sampling op's interface: errors, ``torch.compile``, and the fallback to
the reference (one warning) when the extension is missing or cannot serve a call."""

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from distill.ops.point_sample import (
    _state,
    compiled_available,
    point_sample,
    point_sample_cols,
    point_sample_reference,
    point_sample_sum,
)
from tests.conftest import REPO
from tests.ops.point_sample_cases import TOL, inputs, needs_ext, reference_sum

# -- errors ----------------------------------------------------------------------------------


@needs_ext
@pytest.mark.parametrize('points_shape', [(1, 3, 2, 2), (2, 4, 2, 2), (1, 4, 2, 3),
                                          (1, 4, 3, 2), (1, 4, 2)])
def test_rejects_points_of_the_wrong_shape(points_shape):
    feats = torch.zeros(1, 2, 2, 2)
    points = torch.zeros(points_shape)
    expected = r'points must be \(B, 2N, H, W\) = \(1, 2N, 2, 2\), got'
    with pytest.raises(RuntimeError, match=expected):
        torch.ops.distill.point_sample_cols(feats, points)
    with pytest.raises((RuntimeError, ValueError), match=expected):
        point_sample(feats, points)
    weight = torch.zeros(3, 2, points_shape[1] // 2)  # the weight check passes
    with pytest.raises((RuntimeError, ValueError), match=expected):
        point_sample_sum(feats, points, weight)
    with pytest.raises(RuntimeError, match=expected):
        torch.ops.distill.point_sample_cols_backward(torch.zeros(1, 2, 2, 2, 2), feats, points)


@needs_ext
def test_rejects_other_badinputs():
    feats, points = torch.zeros(1, 2, 3, 4), torch.zeros(1, 6, 3, 4)
    with pytest.raises(RuntimeError, match=r'feats and points must have one dtype'):
        torch.ops.distill.point_sample_cols(feats, points.double())
    with pytest.raises(RuntimeError, match=r'feats and points must have one dtype'):
        torch.ops.distill.point_sample_cols_backward(torch.zeros(1, 3, 4, 3, 2), feats,
                                                     points.double())
    with pytest.raises(RuntimeError, match=r'feats must be \(B, C, H, W\)'):
        torch.ops.distill.point_sample_cols(feats[0], points)
    with pytest.raises(RuntimeError, match=r'grad must be \(B, H, W, N, C\)'):
        torch.ops.distill.point_sample_cols_backward(torch.zeros(1, 3, 4, 2, 3), feats, points)
    with pytest.raises(ValueError, match=r'weight must be \(C_out, C, N\) = \(C_out, 2, 3\)'):
        point_sample_sum(feats, points, torch.zeros(5, 3, 2))


@needs_ext
@pytest.mark.usefixtures('compiled_runs')
def test_mixed_dtypes_run_compiled_in_the_promoted_dtype():
    """Mixed precision (e.g. fp16 features with fp32 points and weights under autocast): the
    public API promotes to the widest dtype and stays on the compiled op (no fallback, which
    the fixture checks), instead of rounding the sub-pixel points to the narrower dtype."""
    feats, points = inputs(1, 2, 3, 4, 5, seed=0)
    weight = torch.randn(3, 2, 3, dtype=torch.float64)
    out = point_sample(feats.float(), points)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, point_sample_reference(feats.float().double(), points),
                               **TOL[torch.float64])
    summed = point_sample_sum(feats, points.float(), weight.float())
    assert summed.dtype == torch.float64
    torch.testing.assert_close(summed, reference_sum(feats, points.float().double(),
                                                     weight.float().double()),
                               **TOL[torch.float64])


# -- torch.compile ---------------------------------------------------------------------------


def _compile_case(seed=0, dtype=torch.float32, shape=(2, 3, 4, 5, 4)):
    b, c, n, h, w = shape
    feats, points = inputs(*shape, seed=seed, dtype=dtype)
    g = torch.Generator().manual_seed(seed + 1)
    weight = torch.randn(6, c, n, generator=g, dtype=dtype)
    bias = torch.randn(6, generator=g, dtype=dtype)
    return feats, points, weight, bias


def _sum_fn(feats, points, weight, bias):
    out = point_sample_sum(feats * 2, points, weight, bias)
    return torch.relu(out).square().sum()


def _sample_fn(feats, points, weight, bias):
    out = point_sample(feats, points * 0.5) + 1
    return (out.mean(2) * feats).tanh().sum() + weight.sum() + bias.sum()


def _check_compiled(fn, args, backend):
    """``torch.compile(fn, backend, fullgraph=True)`` equals eager ``fn`` in value and in the
    gradients of every argument; returns the compiled gradients."""
    torch._dynamo.reset()
    try:
        leaves = [t.clone().requires_grad_() for t in args]
        expected = fn(*leaves)
        expected_grads = torch.autograd.grad(expected, leaves)
        compiled = torch.compile(fn, backend=backend, fullgraph=True)
        leaves = [t.clone().requires_grad_() for t in args]
        got = compiled(*leaves)
        grads = torch.autograd.grad(got, leaves)
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5)
    return grads


@needs_ext
@pytest.mark.usefixtures('compiled_runs')
@pytest.mark.parametrize('fn', [_sum_fn, _sample_fn])
def test_torch_compile_aot_eager(fn):
    grads = _check_compiled(fn, _compile_case(), 'aot_eager')
    assert grads[1].abs().sum() > 0


@needs_ext
@pytest.mark.usefixtures('compiled_runs')
def test_torch_compile_inductor():
    """Inductor (C++ codegen on CPU) around the op: the custom op stays an extern call, its fake
    kernel gives the shapes and strides the generated code relies on. Tiny shape: about 25 s
    with a cold inductor cache on the 2-core CPU, 2 s warm."""
    _check_compiled(_sum_fn, _compile_case(seed=3, shape=(1, 2, 2, 3, 2)), 'inductor')


# -- fallback ---------------------------------------------------------------------------------


_FALLBACK_SCRIPT = textwrap.dedent("""
    import sys
    import warnings

    sys.modules['distill._C'] = None  # `from distill import _C` now raises ImportError

    import torch

    from distill.ops.point_sample import (compiled_available, point_sample_reference,
                                          point_sample_sum, use_compiled)

    assert not compiled_available()
    assert not hasattr(torch.ops.distill, 'point_sample_cols')
    feats, points, weight, bias = torch.load(sys.argv[1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        out = point_sample_sum(feats, points, weight, bias)
        again = point_sample_sum(feats, points, weight, bias)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert 'distill._C' in messages[0] and 'reference' in messages[0], messages
    assert 'pip install --no-build-isolation -e .' in messages[0], messages
    expected = torch.einsum('bcnhw,ocn->bohw', point_sample_reference(feats, points), weight)
    expected = expected + bias[None, :, None, None]
    assert torch.equal(out, expected) and torch.equal(again, expected)
    with use_compiled(True):
        assert torch.equal(point_sample_sum(feats, points, weight, bias), expected)
    torch.save(out, sys.argv[2])
    print('fallback ok')
""")


def test_fallback_without_the_extension(tmp_path):
    """``distill._C`` missing (simulated in a fresh interpreter): point_sample_sum warns exactly
    once, mentioning the reference, and computes the reference."""
    args = _compile_case(seed=4, dtype=torch.float64)
    torch.save(args, tmp_path / 'inputs.pt')
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONWARNINGS', 'DISTILL_NO_EXT')}
    proc = subprocess.run([sys.executable, '-c', _FALLBACK_SCRIPT, str(tmp_path / 'inputs.pt'),
                           str(tmp_path / 'out.pt')], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0 and 'fallback ok' in proc.stdout, proc.stdout + proc.stderr
    out = torch.load(tmp_path / 'out.pt')
    torch.testing.assert_close(out, reference_sum(*args), rtol=0, atol=0)
    if compiled_available():
        torch.testing.assert_close(out, point_sample_sum(*args), **TOL[torch.float64])


def test_float16_on_cpu_falls_back_to_the_reference(monkeypatch):
    """The CPU kernels cover float32 / float64: float16 runs the reference (same values as the
    reference, float16 output), with one warning for any number of calls."""
    monkeypatch.setitem(_state, 'warned', False)
    feats, points, weight, bias = (t.half() for t in _compile_case(seed=5))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        sampled = point_sample(feats, points)
        summed = point_sample_sum(feats, points, weight, bias)
        cols = point_sample_cols(feats, points)
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert 'reference' in str(caught[0].message)
    if compiled_available():  # without the extension the message names the missing build
        assert 'torch.float16' in str(caught[0].message)
    reference = point_sample_reference(feats, points)
    assert sampled.dtype == summed.dtype == cols.dtype == torch.float16
    torch.testing.assert_close(sampled, reference, rtol=0, atol=0)
    torch.testing.assert_close(cols, reference.permute(0, 3, 4, 2, 1), rtol=0, atol=0)
    torch.testing.assert_close(summed, reference_sum(feats, points, weight, bias),
                               rtol=0, atol=0)
    # and close to the float32 computation (the reference in half precision is not wrong)
    torch.testing.assert_close(summed.float(),
                               reference_sum(feats.float(), points.float(), weight.float(),
                                              bias.float()), rtol=2e-2, atol=2e-2)


@pytest.mark.skipif(os.environ.get('DISTILL_NO_EXT') == '1',
                    reason='DISTILL_NO_EXT=1: the extension is deliberately not built')
def test_extension_is_built():
    """`make test` builds distill._C (CI checks this test passes, so a broken build is not
    hidden by the silent fallback to the reference)."""
    try:
        from distill import _C
    except ImportError as error:
        pytest.fail(f'distill._C cannot be imported ({error}); build it with '
                    '`pip install --no-build-isolation -e .` (or `make env`), or set '
                    'DISTILL_NO_EXT=1 to run without it')
    assert compiled_available()
    from torch.utils.cpp_extension import CUDA_HOME
    # setup.py builds the CUDA kernels exactly when torch is a CUDA build and nvcc is found
    assert _C.with_cuda == (torch.version.cuda is not None and CUDA_HOME is not None)
    assert hasattr(torch.ops.distill, 'point_sample_cols')
