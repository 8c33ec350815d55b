"""The CPU kernels' parallel loops (ops/csrc/parallel.h): with every loop forced parallel
(``set_min_parallel_work(0)``), each kernel gives bitwise the same result quiet and while another
process keeps a core busy (tasks handed out by a counter land on whichever thread is free), on
1, 2 and 4 threads and serially; except the point-sampling backward's feature and kernel
gradients, whose per-thread copies are summed in an order set by the thread count (bitwise the
same under any load at one thread count, within float rounding across counts); the threshold
setter returns the previous value."""

import pytest
import torch

from benchmarks.busy import busy_core
from distill.models.assigners.batched_gmm import gmm_split
from distill.ops.focal_neg_sum import focal_neg_sum
from distill.ops.point_sample import compiled_available, point_sample, point_sample_sum

needs_ext = pytest.mark.skipif(not compiled_available(), reason='distill._C not built')


def _runs(fn, threads=(1, 2, 4)):
    """``fn()`` serially (threshold above any loop), then forced parallel on each thread count,
    quiet and with one core busy."""
    from distill import _C
    previous_threads = torch.get_num_threads()
    previous = _C.set_min_parallel_work(1 << 62)
    try:
        outs = [fn()]
        _C.set_min_parallel_work(0)
        for busy in (False, True):  # outs[1 + k]: quiet, outs[1 + len(threads) + k]: busy
            with busy_core(busy):
                for t in threads:
                    torch.set_num_threads(t)
                    outs.append(fn())
    finally:
        _C.set_min_parallel_work(previous)
        torch.set_num_threads(previous_threads)
    return outs


def _same(outs):
    first = outs[0] if isinstance(outs[0], tuple) else (outs[0],)
    for out in outs[1:]:
        out = out if isinstance(out, tuple) else (out,)
        for a, b in zip(first, out):
            assert torch.equal(a, b)


@needs_ext
def test_threshold_setter_returns_the_previous_value():
    from distill import _C
    previous = _C.set_min_parallel_work(123)
    try:
        assert _C.set_min_parallel_work(456) == 123
    finally:
        _C.set_min_parallel_work(previous)


@needs_ext
def test_focal_neg_sum_and_gmm_split_any_threads_any_load():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3000, 80, generator=gen) * 3
    _same(_runs(lambda: focal_neg_sum(logits)))
    scores = torch.rand(500, 18, generator=gen, dtype=torch.float64)
    valid = torch.rand(500, 18, generator=gen) > 0.2
    outs = _runs(lambda: gmm_split(scores, valid))
    _same(outs)
    assert outs[0].any() and not outs[0].all()


@needs_ext
def test_point_sample_forward_and_backward_any_threads_any_load():
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(2, 16, 12, 10, generator=gen)
    points = torch.randn(2, 18, 12, 10, generator=gen) * 4
    weight = torch.randn(8, 16, 9, generator=gen)

    def step():
        f, p, w = (t.clone().requires_grad_() for t in (feats, points, weight))
        cols = point_sample(f, p)
        out = point_sample_sum(f, p, w)
        (cols.square().sum() + out.square().sum()).backward()
        # bitwise everywhere first, then the gradients summed from per-thread copies
        return (cols.detach(), out.detach(), p.grad), (f.grad, w.grad)

    outs = _runs(step)
    n = 3
    _same([o[0] for o in outs])  # samples, sums and point gradients
    for k in range(n):  # the same thread count, quiet and busy: bitwise
        _same([outs[1 + k][1], outs[1 + n + k][1]])
    for out in outs[1:]:  # across thread counts: the copies' summation order
        for a, b in zip(out[1], outs[0][1]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
