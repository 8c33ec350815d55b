"""LD and KD against hand-computed values and mmdet 3.3's KnowledgeDistillationKLDivLoss."""

import math

import pytest
import torch
from mmdet.models.losses import KnowledgeDistillationKLDivLoss

from distill.losses import KDLoss, LDLoss, kd_loss, ld_loss

EPS = torch.finfo(torch.float32).eps  # mmdet's weight_reduce_loss adds it to avg_factor


def _kl_by_hand(zs, zt, T):
    """KL(softmax(zt/T) || softmax(zs/T)) * T^2 with Python floats."""
    ps = [math.exp(z / T) for z in zs]
    pt = [math.exp(z / T) for z in zt]
    ps = [p / sum(ps) for p in ps]
    pt = [p / sum(pt) for p in pt]
    return sum(t * math.log(t / s) for s, t in zip(ps, pt)) * T * T


def test_ld_matches_hand_computed_sum_over_edges_and_weighted_mean():
    s = [[[0.0, 1.0, 2.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [2.0, -1.0, 0.0]],
         [[1.0, 1.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [1.0, 2.0, 3.0]]]
    t = [[[2.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.5], [0.0, 0.0, 4.0]],
         [[0.0, 0.0, 1.0], [3.0, 0.0, 0.0], [1.0, 0.0, 0.0], [3.0, 2.0, 1.0]]]
    w = [0.3, 0.9]
    T = 2.0
    per_box = [sum(_kl_by_hand(s[m][e], t[m][e], T) for e in range(4)) for m in range(2)]
    expected = (w[0] * per_box[0] + w[1] * per_box[1]) / (w[0] + w[1])
    got = ld_loss(torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64),
                  weight=torch.tensor(w, dtype=torch.float64), T=T)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # flat [M, 4 * n] input is the same thing; an explicit avg_factor replaces sum(w)
    flat = ld_loss(torch.tensor(s).reshape(2, 12).double(), torch.tensor(t).reshape(2, 12).double(),
                   weight=torch.tensor(w, dtype=torch.float64), avg_factor=5.0, T=T)
    assert flat.item() == pytest.approx(expected * (w[0] + w[1]) / 5.0, rel=1e-12)


def test_kd_matches_hand_computed():
    s = [[0.1, 2.0, -1.0], [0.0, 0.0, 0.0]]
    t = [[1.0, 0.0, 0.0], [3.0, -2.0, 1.0]]
    expected = (_kl_by_hand(s[0], t[0], 2.0) + _kl_by_hand(s[1], t[1], 2.0)) / 2
    got = kd_loss(torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64), T=2)
    assert got.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize('n_bins', [17, 8])
def test_ld_equals_n_bins_times_mmdet_kd_kl_div_loss(n_bins):
    """mmdet averages the KL over the bins of each edge (``.mean(1)``); LD sums it (the
    paper's KL). mmdet also divides by ``avg_factor + eps`` (float32 eps). So, exactly:
    ``ld_loss(avg_factor=A) == n_bins * mmdet(avg_factor=A - eps)``."""
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 4 * n_bins, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(6, 4 * n_bins, generator=g, dtype=torch.float64)
    w = torch.rand(6, generator=g, dtype=torch.float64)
    ours = ld_loss(s, t, weight=w, avg_factor=3.0, T=10)
    mmdet = KnowledgeDistillationKLDivLoss(loss_weight=1.0, T=10)(
        s.reshape(-1, n_bins), t.reshape(-1, n_bins), weight=w.repeat_interleave(4),
        avg_factor=3.0 - EPS)
    assert ours.item() == pytest.approx(n_bins * mmdet.item(), rel=1e-10)
    g_ours, = torch.autograd.grad(ours, s)
    g_mmdet, = torch.autograd.grad(mmdet, s)
    torch.testing.assert_close(g_ours, n_bins * g_mmdet)


@pytest.mark.parametrize('n_bins', [17, 8])
def test_ld_bins_mean_equals_mmdet_kd_kl_div_loss(n_bins):
    """``bins='mean'`` (the published code's scale) is mmdet's loss itself, values and
    gradients, with mmdet's eps on the avg_factor accounted for."""
    g = torch.Generator().manual_seed(1)
    s = torch.randn(5, 4 * n_bins, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 4 * n_bins, generator=g, dtype=torch.float64)
    w = torch.rand(5, generator=g, dtype=torch.float64)
    ours = LDLoss(T=10, loss_weight=0.25, bins='mean')(s, t, weight=w, avg_factor=4.0)
    mmdet = KnowledgeDistillationKLDivLoss(loss_weight=0.25, T=10)(
        s.reshape(-1, n_bins), t.reshape(-1, n_bins), weight=w.repeat_interleave(4),
        avg_factor=4.0 - EPS)
    torch.testing.assert_close(ours, mmdet, rtol=1e-12, atol=0)
    g_ours, = torch.autograd.grad(ours, s)
    g_mmdet, = torch.autograd.grad(mmdet, s)
    torch.testing.assert_close(g_ours, g_mmdet, rtol=1e-10, atol=1e-15)
    with pytest.raises(ValueError, match='bins'):
        LDLoss(bins='avg')


def test_kd_equals_n_classes_times_mmdet():
    """KD sums the KL over classes, mmdet averages it: kd = C * mmdet (same eps shift)."""
    g = torch.Generator().manual_seed(1)
    s = torch.randn(5, 10, generator=g, dtype=torch.float64)
    t = torch.randn(5, 10, generator=g, dtype=torch.float64)
    ours = kd_loss(s, t, avg_factor=5.0, T=2)
    mmdet = KnowledgeDistillationKLDivLoss(T=2)(s, t, avg_factor=5.0 - EPS)
    assert ours.item() == pytest.approx(10 * mmdet.item(), rel=1e-10)


@pytest.mark.parametrize('fn', [ld_loss, kd_loss])
def test_teacher_equal_to_student_gives_zero_and_zero_gradient(fn):
    z = torch.randn(7, 4 * 17, dtype=torch.float64, requires_grad=True)
    loss = fn(z, z.detach().clone(), weight=torch.rand(7, dtype=torch.float64))
    assert abs(loss.item()) < 1e-12
    grad, = torch.autograd.grad(loss, z)
    assert grad.abs().max().item() < 1e-12


@pytest.mark.parametrize('module', [LDLoss(T=10, loss_weight=0.5), KDLoss(T=2, loss_weight=3.0)])
def test_gradients_reach_the_student_only_and_gradcheck(module):
    s = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    w = torch.rand(3, dtype=torch.float64)
    module(s, t, weight=w, avg_factor=2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None  # the teacher side is detached inside the loss
    assert torch.autograd.gradcheck(
        lambda x: module(x, t.detach(), weight=w, avg_factor=2.0), (s.detach().requires_grad_(),))


def test_loss_weight_scales_and_modules_build_from_the_registry():
    from mmrazor.registry import MODELS
    s, t = torch.randn(4, 68), torch.randn(4, 68)
    # mmrazor's registry, whatever default scope earlier tests left current
    built = MODELS.build(dict(type='LDLoss', T=10, loss_weight=0.25, _scope_='mmrazor'))
    assert isinstance(built, LDLoss)
    assert built(s, t).item() == pytest.approx(0.25 * ld_loss(s, t, T=10).item(), rel=1e-6)
    with pytest.raises(ValueError, match='shape'):
        kd_loss(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match='4 \\* \\(reg_max \\+ 1\\)'):
        ld_loss(torch.randn(2, 7), torch.randn(2, 7))


def test_kd_sigmoid_is_a_bernoulli_kl_per_class_and_auto_picks_it_for_one_class():
    """One class: softmax KD would be identically 0 (a trees-like single-class detector)."""
    def bern(zs, zt, T):
        ps, pt = 1 / (1 + math.exp(-zs / T)), 1 / (1 + math.exp(-zt / T))
        return (pt * math.log(pt / ps) + (1 - pt) * math.log((1 - pt) / (1 - ps))) * T * T

    s = [[0.3, -1.0], [2.0, 0.5], [-0.7, 1.5]]
    t = [[1.0, 0.0], [-1.0, 0.5], [0.2, 3.0]]
    w = [1.0, 0.5, 2.0]
    expected = sum(wi * sum(bern(a, b, 2.0) for a, b in zip(si, ti))
                   for si, ti, wi in zip(s, t, w)) / sum(w)
    got = kd_loss(torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64),
                  weight=torch.tensor(w, dtype=torch.float64), T=2, activation='sigmoid')
    assert got.item() == pytest.approx(expected, rel=1e-12)
    one_s = torch.tensor([[0.3], [2.0]], dtype=torch.float64)
    one_t = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    auto = kd_loss(one_s, one_t, T=2)  # auto: sigmoid for one class
    assert auto.item() == pytest.approx((bern(0.3, 1.0, 2) + bern(2.0, -1.0, 2)) / 2, rel=1e-12)
    assert auto.item() > 0
    # more classes: auto is the softmax of the published code
    assert kd_loss(torch.tensor(s), torch.tensor(t)).item() == pytest.approx(
        kd_loss(torch.tensor(s), torch.tensor(t), activation='softmax').item())
    with pytest.raises(ValueError, match='identically 0'):
        kd_loss(one_s, one_t, activation='softmax')
    with pytest.raises(ValueError, match='shape'):
        kd_loss(torch.randn(2, 3), torch.randn(2, 4), activation='sigmoid')
    with pytest.raises(ValueError, match='activation'):
        KDLoss(activation='relu')
    z = torch.randn(3, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: KDLoss(T=2)(x, one_t[:1].expand(3, 1)), (z,))


@pytest.mark.parametrize('fn', [ld_loss, kd_loss])
def test_an_empty_region_gives_zero_with_a_gradient_path(fn):
    """A batch without GT (or an empty VLR) selects no rows: 0, and backward still works."""
    s = torch.zeros(0, 4 * 17, requires_grad=True)
    loss = fn(s, torch.zeros(0, 4 * 17), weight=torch.zeros(0), avg_factor=1.0)
    assert loss.item() == 0
    loss.backward()
    assert s.grad is not None and s.grad.shape == (0, 68)
