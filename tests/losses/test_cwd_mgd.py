"""CWD and MGD against mmrazor 1.0's ChannelWiseDivergence and MGDConnector + MGDLoss, in value
and gradient, on random maps of several levels (mmrazor: one loss / connector per level, the
levels summed, as its detection configs)."""

import math

import pytest
import torch

import distill  # noqa: F401  (distill.compat before mmrazor)
from distill.losses import CWDFeatureLoss, MGDFeatureLoss, cwd_loss, draw_masks, mgd_loss

#: three non-square levels of one batch (B, C, H_l, W_l)
SHAPES = [(2, 6, 8, 10), (2, 6, 4, 5), (2, 6, 2, 3)]


def _maps(seed, shapes=SHAPES, dtype=torch.float64, grad=False):
    g = torch.Generator().manual_seed(seed)
    maps = [torch.randn(*s, generator=g, dtype=dtype) * (1 + i) + i for i, s in
            enumerate(shapes)]
    return [m.requires_grad_(True) for m in maps] if grad else maps


def _assert_same(ours, ref, inputs, rtol=1e-10):
    assert ours.item() == pytest.approx(ref.item(), rel=rtol)
    for a, b in zip(torch.autograd.grad(ours, inputs), torch.autograd.grad(ref, inputs)):
        torch.testing.assert_close(a, b, rtol=rtol, atol=1e-13)


@pytest.mark.parametrize('tau', [1.0, 4.0])
def test_cwd_equals_mmrazor_channel_wise_divergence_summed_over_levels(tau):
    from mmrazor.models.losses import ChannelWiseDivergence
    s, t = _maps(1, grad=True), _maps(2)

    def ref():
        return sum(ChannelWiseDivergence(tau=tau, loss_weight=10.0)(a, b) for a, b in zip(s, t))

    _assert_same(CWDFeatureLoss(tau=tau, loss_weight=10.0)(s, t), ref(), s)
    # a weight of all ones (AllRegion through the graph) is the same loss
    ones = [torch.ones(m.shape[0], 1, *m.shape[2:], dtype=m.dtype) for m in s]
    _assert_same(CWDFeatureLoss(tau, 10.0)(s, t, weight=ones), ref(), s)


def test_cwd_weights_each_position_and_is_zero_at_the_teacher():
    # one image, one channel, 3 positions: KL terms by hand, the second position dropped
    s = torch.tensor([[[[0.5, -1.0, 2.0]]]], dtype=torch.float64)
    t = torch.tensor([[[[1.0, 0.0, -0.5]]]], dtype=torch.float64)
    tau = 2.0
    ps = [math.exp(v / tau) for v in s.flatten().tolist()]
    pt = [math.exp(v / tau) for v in t.flatten().tolist()]
    ps = [v / sum(ps) for v in ps]
    pt = [v / sum(pt) for v in pt]
    terms = [q * math.log(q / p) for p, q in zip(ps, pt)]
    w = torch.tensor([[[[1.0, 0.0, 0.5]]]], dtype=torch.float64)
    got = cwd_loss([s], [t], tau=tau, weight=[w])
    assert got.item() == pytest.approx(tau ** 2 * (terms[0] + 0.5 * terms[2]), rel=1e-12)
    assert cwd_loss([t], [t]).item() == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match='avg_factor must be None'):
        cwd_loss([s], [t], avg_factor=2.0)
    with pytest.raises(ValueError, match=r'level 0: student map \(1, 1, 1, 3\) vs teacher'):
        cwd_loss([s], [t[..., :2]])


def _mmrazor_mgd(student_channels, channels, ours):
    """mmrazor's connectors (one per level), their generation blocks copied from ours."""
    from mmrazor.models.architectures.connectors import MGDConnector
    conns = [MGDConnector(student_channels, channels, lambda_mgd=ours.lambda_mgd).double()
             for _ in range(ours.num_levels)]
    for conn, gen in zip(conns, ours.generation):
        conn.generation.load_state_dict(gen.state_dict())
    return conns


@pytest.mark.parametrize('student_channels', [6, 4])
def test_mgd_equals_mmrazor_connector_and_loss_for_the_same_generator_state(student_channels):
    """Same global RNG state: the same masks (drawn level by level as mmrazor's connectors),
    hence the same value and gradients (student maps, generation blocks). With narrower student
    maps mmrazor's connector starts with its 1x1 align conv; ours takes the aligned maps (the
    graph's adapter), here that same conv."""
    from mmrazor.models.losses import MGDLoss
    torch.manual_seed(3)
    ours = MGDFeatureLoss(channels=6, num_levels=3, alpha_mgd=2e-5, lambda_mgd=0.65).double()
    conns = _mmrazor_mgd(student_channels, 6, ours)
    shapes = [(2, student_channels, h, w) for _, _, h, w in SHAPES]
    s, t = _maps(1, shapes, grad=True), _maps(2)
    aligned = [c.align(x) if c.align is not None else x for c, x in zip(conns, s)]
    params = list(ours.parameters())
    ref_params = [p for c in conns for p in c.generation.parameters()]

    torch.manual_seed(11)
    value = ours(aligned, t)
    grads = torch.autograd.grad(value, s + params)
    torch.manual_seed(11)
    ref = sum(MGDLoss(alpha_mgd=2e-5)(c(x), y) for c, x, y in zip(conns, s, t))
    ref_grads = torch.autograd.grad(ref, s + ref_params)
    assert value.item() == pytest.approx(ref.item(), rel=1e-10)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-15)
    assert all(g.abs().sum() > 0 for g in grads)  # every level's block learns


def test_mgd_masks_come_from_the_global_generator_and_drop_lambda_of_the_positions():
    x = [torch.zeros(4, 3, 50, 60)]
    torch.manual_seed(0)
    a = draw_masks(x, 0.65)[0]
    torch.manual_seed(0)
    b = draw_masks(x, 0.65)[0]
    assert torch.equal(a, b) and a.shape == (4, 1, 50, 60)
    assert a.mean().item() == pytest.approx(0.35, abs=0.02)
    assert not torch.equal(a, draw_masks(x, 0.65)[0])
    # explicit masks: the loss is the plain generative MSE (all kept, identity-free block)
    loss = MGDFeatureLoss(channels=2, num_levels=1).double()
    s, t = _maps(5, [(2, 2, 3, 4)]), _maps(6, [(2, 2, 3, 4)])
    keep = [torch.ones(2, 1, 3, 4, dtype=torch.float64)]
    expected = (loss.generation[0](s[0]) - t[0]).pow(2).sum() / 2 * 2e-5
    assert loss(s, t, masks=keep).item() == pytest.approx(expected.item(), rel=1e-12)
    w = [torch.zeros(2, 1, 3, 4, dtype=torch.float64)]
    assert mgd_loss(s, t, generators=loss.generation, masks=keep, weight=w).item() == 0.0


def test_mgd_refuses_maps_it_was_not_built_for():
    loss = MGDFeatureLoss(channels=256, num_levels=5)
    with pytest.raises(ValueError, match=r'built for 5 levels of 256 channels.*3 levels of '
                                         r'\[96\] channels.*channels='):
        loss(_maps(0, [(1, 96, 4, 4)] * 3, torch.float32),
             _maps(1, [(1, 96, 4, 4)] * 3, torch.float32))
    with pytest.raises(ValueError, match='masked fraction'):
        MGDFeatureLoss(channels=4, lambda_mgd=1.0)
