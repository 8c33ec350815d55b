"""The compiled focal negative sum (``ops/csrc/focal_neg_sum``) against mmdet's own sigmoid focal
loss with all-zero targets (an independent definition) and against our PyTorch reference."""

import pytest
import torch
from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss

from distill.ops.extension import use_compiled
from distill.ops.focal_neg_sum import focal_neg_sum, focal_neg_sum_reference
from distill.ops.point_sample import compiled_available

needs_ext = pytest.mark.skipif(not compiled_available('cpu'),
                               reason='distill._C is not built (DISTILL_NO_EXT=1 or no build)')


def _mmdet(logits, gamma=2.0, alpha=0.25):
    """mmdet's focal loss of each class with target 0, summed over the classes (float64)."""
    x = logits.double().reshape(-1, logits.shape[-1])
    loss = py_sigmoid_focal_loss(x, torch.zeros_like(x), gamma=gamma, alpha=alpha,
                                 reduction='none')
    return loss.sum(-1).view(logits.shape[:-1])


@needs_ext
@pytest.mark.parametrize('classes', [1, 10, 80, 5000])
def test_kernel_equals_mmdet_focal_loss(classes):
    gen = torch.Generator().manual_seed(classes)
    # logits of a head part-way through training (mostly background), and wide ones
    logits = torch.cat([torch.randn(64, classes, generator=gen) - 4,
                        torch.randn(64, classes, generator=gen) * 12])
    ours = torch.ops.distill.focal_neg_sum(logits, 2.0, 0.25)
    want = _mmdet(logits)
    torch.testing.assert_close(ours.double(), want, rtol=1e-5, atol=1e-30)
    torch.testing.assert_close(focal_neg_sum_reference(logits).double(), want, rtol=1e-5,
                               atol=1e-30)


@needs_ext
def test_kernel_at_extreme_logits():
    # large |x|: exp(-|x|) underflows (clamped in the kernel); +-inf; exactly 0
    row = torch.tensor([[-1e4, -200.0, -88.0, -87.0, -20.0, -1e-6, 0.0, 1e-6, 0.5, 20.0,
                         87.0, 200.0, 1e4, 3e38]])
    ours = torch.ops.distill.focal_neg_sum(row.T.contiguous(), 2.0, 0.25)  # rows of 1 class
    want = _mmdet(row.T)
    torch.testing.assert_close(ours.double(), want, rtol=1e-5, atol=1e-30)
    special = torch.tensor([[float('inf')], [float('-inf')], [float('nan')]])
    got = torch.ops.distill.focal_neg_sum(special, 2.0, 0.25)
    assert got[0] == float('inf') and got[1] == 0 and got[2].isnan()
    assert focal_neg_sum_reference(special[:2]).tolist() == got[:2].tolist()


@needs_ext
def test_wrapper_shapes_strides_and_threads():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 300, 80, generator=gen) - 3
    want = focal_neg_sum_reference(logits)
    got = focal_neg_sum(logits)
    assert got.shape == (2, 300)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    # a non-contiguous view (classes strided), no rows, and a leaf that needs a gradient
    wide = torch.randn(2, 300, 160, generator=gen)
    torch.testing.assert_close(focal_neg_sum(wide[..., ::2]),
                               focal_neg_sum_reference(wide[..., ::2]), rtol=1e-5, atol=0)
    assert focal_neg_sum(torch.zeros(0, 80)).shape == (0,)
    assert torch.equal(focal_neg_sum(torch.zeros(3, 0)), torch.zeros(3))  # no classes
    leaf = logits.clone().requires_grad_()
    assert not focal_neg_sum(leaf).requires_grad
    # rows split across threads: each row's sum is the same on any thread count
    previous = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            outs.append(focal_neg_sum(logits))
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_reference_where_the_kernel_does_not_apply():
    logits = torch.randn(50, 80, dtype=torch.float64) - 3
    # float64, another gamma and use_compiled(False) run the reference itself
    assert torch.equal(focal_neg_sum(logits), focal_neg_sum_reference(logits))
    x = logits.float()
    torch.testing.assert_close(focal_neg_sum(x, gamma=1.5).double(), _mmdet(x, gamma=1.5),
                               rtol=1e-5, atol=0)
    with use_compiled(False):
        assert torch.equal(focal_neg_sum(x), focal_neg_sum_reference(x))


@needs_ext
def test_fake_implementation():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        out = torch.ops.distill.focal_neg_sum(torch.empty(7, 80), 2.0, 0.25)
    assert out.shape == (7,) and out.dtype == torch.float32


@needs_ext
def test_kernel_refuses_what_it_does_not_compute():
    with pytest.raises(RuntimeError, match='gamma = 2 only'):
        torch.ops.distill.focal_neg_sum(torch.zeros(3, 4), 1.5, 0.25)
    with pytest.raises(RuntimeError, match='float32 only'):
        torch.ops.distill.focal_neg_sum(torch.zeros(3, 4, dtype=torch.float64), 2.0, 0.25)
