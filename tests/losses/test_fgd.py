"""FGD (FGDRegion + FGDFeatureLoss, as a feature edge runs them) against a per-position loop
written from the paper's equations, with the published code's sums and divisions: values and
gradients (student maps and both sides' GcBlocks), float64, overlapping boxes."""

import math

import pytest
import torch

import distill  # noqa: F401  (distill.compat before mmrazor)
from distill.graph.edges import split_levels
from distill.losses import ContextBlock, FGDFeatureLoss
from distill.regions import FGDRegion, RegionContext
from tests.regions.test_fgd_region import BOXES, SIZES, STRIDES, grid_priors, naive_foreground

C = 4
HP = dict(temp=0.5, alpha_fgd=0.7, beta_fgd=1.3, gamma_fgd=0.4, lambda_fgd=0.2)


def naive_attention(f, n, temp):
    """``A^S[i][j] = H W exp(g_ij / T) / sum exp(g / T)``, ``g_ij = mean_c |F_cij|``, and
    ``A^C[c] = C exp(m_c / T) / sum exp(m / T)``, ``m_c = mean_ij |F_cij|``, of image n."""
    _, ch, h, w = f.shape
    g = [[sum(f[n, c, i, j].abs() for c in range(ch)) / ch for j in range(w)] for i in range(h)]
    z = sum(torch.exp(g[i][j] / temp) for i in range(h) for j in range(w))
    spatial = [[h * w * torch.exp(g[i][j] / temp) / z for j in range(w)] for i in range(h)]
    m = [sum(f[n, c, i, j].abs() for i in range(h) for j in range(w)) / (h * w)
         for c in range(ch)]
    zc = sum(torch.exp(v / temp) for v in m)
    return spatial, [ch * torch.exp(v / temp) / zc for v in m]


def naive_gcblock(block, f, n):
    """``R(F)_cij = F_cij + W_v2 ReLU(LN(W_v1 sum_ij softmax(W_k F_ij) F_ij))_c``, image n."""
    _, ch, h, w = f.shape
    wk, bk = block.conv_mask.weight[0, :, 0, 0], block.conv_mask.bias[0]
    pos = [(i, j) for i in range(h) for j in range(w)]
    logit = {p: sum(wk[c] * f[n, c, p[0], p[1]] for c in range(ch)) + bk for p in pos}
    z = sum(torch.exp(v) for v in logit.values())
    context = [sum(torch.exp(logit[p]) / z * f[n, c, p[0], p[1]] for p in pos)
               for c in range(ch)]
    conv1, norm, _, conv2 = block.channel_add
    k = conv1.out_channels
    y = [sum(conv1.weight[q, c, 0, 0] * context[c] for c in range(ch)) + conv1.bias[q]
         for q in range(k)]
    mean = sum(y) / k
    var = sum((v - mean) ** 2 for v in y) / k
    y = [torch.relu((v - mean) / torch.sqrt(var + norm.eps) * norm.weight[q, 0, 0]
                    + norm.bias[q, 0, 0]) for q, v in enumerate(y)]
    add = [sum(conv2.weight[c, q, 0, 0] * y[q] for q in range(k)) + conv2.bias[c]
           for c in range(ch)]
    return [[[f[n, c, i, j] + add[c] for j in range(w)] for i in range(h)] for c in range(ch)]


def naive_fgd(student, teacher, boxes, loss):
    """Sum over levels and images of ``(alpha L_fg + beta L_bg + gamma L_at + lambda L_global)
    / B``, position by position."""
    temp = loss.temp
    total = 0.0
    for lvl, (s, t, stride) in enumerate(zip(student, teacher, STRIDES)):
        b, ch, h, w = s.shape
        for n in range(b):
            fg_mask = naive_foreground(h, w, stride, boxes[n])
            n_bg = sum(v == 0 for row in fg_mask for v in row)
            s_sp, s_ch = naive_attention(s, n, temp)
            t_sp, t_ch = naive_attention(t, n, temp)
            r_s = naive_gcblock(loss.gc_student[lvl], s, n)
            r_t = naive_gcblock(loss.gc_teacher[lvl], t, n)
            fg = bg = glob = 0.0
            for c in range(ch):
                for i in range(h):
                    for j in range(w):
                        d2 = t_sp[i][j] * t_ch[c] * (s[n, c, i, j] - t[n, c, i, j]) ** 2
                        if fg_mask[i][j] > 0:
                            fg = fg + fg_mask[i][j] * d2
                        else:
                            bg = bg + d2 / n_bg
                        glob = glob + (r_s[c][i][j] - r_t[c][i][j]) ** 2
            att = (sum(abs(a - z) for a, z in zip(s_ch, t_ch))
                   + sum(abs(s_sp[i][j] - t_sp[i][j]) for i in range(h) for j in range(w)))
            total = total + (loss.alpha_fgd * fg + loss.beta_fgd * bg + loss.gamma_fgd * att
                             + loss.lambda_fgd * glob) / b
    return total


def _maps(seed, grad=False):
    g = torch.Generator().manual_seed(seed)
    maps = [torch.randn(len(BOXES), C, h, w, generator=g, dtype=torch.float64) * (1 + i)
            for i, (h, w) in enumerate(SIZES)]
    return [m.requires_grad_(True) for m in maps] if grad else maps


def test_fgd_equals_the_per_position_loop_of_the_equations():
    torch.manual_seed(0)
    loss = FGDFeatureLoss(channels=C, num_levels=2, **HP).double()
    with torch.no_grad():  # past the zero init of the last convs: every path carries gradient
        for p in loss.parameters():
            p.normal_(0.0, 0.5)
    student, teacher = _maps(1, grad=True), _maps(2)
    ctx = RegionContext(priors=grid_priors(SIZES, STRIDES, 0.0, 8.0, torch.float64),
                        gt_bboxes=[torch.tensor(b, dtype=torch.float64).reshape(-1, 4)
                                   for b in BOXES])
    weight = split_levels(FGDRegion(STRIDES)(ctx), student)  # as the graph's feature edge
    inputs = student + list(loss.parameters())
    ours = loss(student, teacher, weight=weight)
    grads = torch.autograd.grad(ours, inputs)
    ref = naive_fgd(student, teacher, BOXES, loss)
    ref_grads = torch.autograd.grad(ref, inputs)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-10)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert all(g.abs().sum() > 0 for g in grads)


def test_fgd_terms_and_their_weights():
    """Each weight scales its term alone; the published init makes R the identity, so the
    global term starts at the plain summed squared error; equal maps cost nothing."""
    student, teacher = _maps(3), _maps(4)
    fg = [torch.zeros(len(BOXES), 1, h, w, dtype=torch.float64) for h, w in SIZES]
    fg[0][0, 0, 1:3, 2:4] = 0.25

    def term(**weights):
        hp = dict(temp=0.5, alpha_fgd=0.0, beta_fgd=0.0, gamma_fgd=0.0, lambda_fgd=0.0)
        torch.manual_seed(0)
        loss = FGDFeatureLoss(channels=C, num_levels=2, **dict(hp, **weights)).double()
        return loss(student, teacher, weight=fg).item()

    diff = sum((s - t).pow(2).sum().item() for s, t in zip(student, teacher)) / len(BOXES)
    assert term(lambda_fgd=2.0) == pytest.approx(2.0 * diff, rel=1e-12)
    for name in ('alpha_fgd', 'beta_fgd', 'gamma_fgd'):
        assert term(**{name: 3.0}) == pytest.approx(3.0 * term(**{name: 1.0}), rel=1e-12)
        assert term(**{name: 1.0}) > 0
    # loss_weight: one factor on the sum of the four terms
    every = dict(alpha_fgd=1.0, beta_fgd=0.5, gamma_fgd=0.25, lambda_fgd=2.0)
    assert term(**every, loss_weight=0.1) == pytest.approx(0.1 * term(**every), rel=1e-12)
    assert term(**every, loss_weight=0.0) == 0.0
    with pytest.raises(ValueError, match='loss_weight must be >= 0, got -1'):
        FGDFeatureLoss(channels=C, num_levels=2, loss_weight=-1)
    torch.manual_seed(0)
    same = FGDFeatureLoss(channels=C, num_levels=2, **HP).double()
    assert same(teacher, teacher, weight=fg).item() == pytest.approx(0.0, abs=1e-12)
    block = ContextBlock(C).double()
    assert torch.equal(block(teacher[0]), teacher[0])


def test_fgd_needs_its_region_and_the_maps_it_was_built_for():
    loss = FGDFeatureLoss(channels=C, num_levels=2).double()
    student, teacher = _maps(5), _maps(6)
    with pytest.raises(ValueError, match="region=dict\\(type='FGDRegion'\\)"):
        loss(student, teacher)
    with pytest.raises(ValueError, match=r'built for 2 levels of 4 channels.*1 levels'):
        loss(student[:1], teacher[:1], weight=[torch.zeros(3, 1, 6, 7)])
    with pytest.raises(ValueError, match='avg_factor must be None'):
        loss(student, teacher, weight=[torch.zeros(3, 1, h, w) for h, w in SIZES],
             avg_factor=1.0)
    with pytest.raises(ValueError, match='at least 2 channels'):
        ContextBlock(1)
    assert not math.isnan(loss(student, teacher, weight=[
        torch.zeros(3, 1, h, w, dtype=torch.float64) for h, w in SIZES]).item())
