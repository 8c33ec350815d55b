"""BCKD's losses and region (distill/losses/bckd.py, distill/regions/score_gap.py) against
naive per-prior / per-class loops of the equations (B1-B4, float64), hand-computed cases,
the published code's GIoU option, and a few training steps of the recipe on the tiny GFL pair.
"""

import math

import pytest
import torch

import distill  # noqa: F401  (distill.compat before mmrazor)
from distill.graph.edges import edge_normaliser
from distill.losses import (
    BCKDClsLoss,
    BCKDLocLoss,
    QFLKDLoss,
    bckd_cls_loss,
    bckd_cls_per_row,
    bckd_loc_per_box,
)
from distill.regions import RegionContext, ScoreGapRegion

F64 = torch.float64


def _sig(z):
    return 1 / (1 + torch.exp(-z)) if torch.is_tensor(z) else 1 / (1 + math.exp(-z))


def _naive_cls(s, t):
    """(B1-B2) one prior and one class at a time: ``sum_i sum_j |q - p| * BCE(p, q)``, rows
    kept apart (``Tensor[M]``); torch scalars, so that autograd differentiates the loop."""
    rows = []
    for i in range(s.shape[0]):
        total = s.new_zeros(())
        for j in range(s.shape[1]):
            p, q = _sig(s[i, j]), _sig(t[i, j].detach())
            bce = -((1 - q) * torch.log(1 - p) + q * torch.log(p))  # (B1)
            total = total + torch.abs(q - p) * bce  # (B2), w_ij = |p'_t - p'_s|
        rows.append(total)
    return torch.stack(rows)


def _naive_iou(a, b, giou=False):
    """IoU (or GIoU) of two boxes, written out coordinate by coordinate."""
    iw = torch.clamp(torch.minimum(a[2], b[2]) - torch.maximum(a[0], b[0]), min=0)
    ih = torch.clamp(torch.minimum(a[3], b[3]) - torch.maximum(a[1], b[1]), min=0)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    iou = inter / union
    if not giou:
        return iou
    enclose = ((torch.maximum(a[2], b[2]) - torch.minimum(a[0], b[0]))
               * (torch.maximum(a[3], b[3]) - torch.minimum(a[1], b[1])))
    return iou - (enclose - union) / enclose


def _logits(seed, m, k, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(m, k, generator=g, dtype=F64) * scale).requires_grad_(True)
    return s, torch.randn(m, k, generator=g, dtype=F64) * scale, g


def _boxes(seed, m):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(m, 2, generator=g, dtype=F64) * 40
    wh = torch.rand(m, 2, generator=g, dtype=F64) * 30 + 2
    student = torch.cat([xy, xy + wh], 1).requires_grad_(True)
    shift = torch.rand(m, 2, generator=g, dtype=F64) * 16 - 8
    teacher = torch.cat([xy + shift, xy + shift + wh * 0.8], 1)
    return student, teacher, g


# ------------------------------------------------------------------ classification (B1-B2)
def test_cls_hand_value_and_gradient():
    # p'_s = sigma(0) = 1/2, p'_t = sigma(ln 3) = 3/4: BCE = ln 2, w = 1/4
    s = torch.zeros(1, 1, dtype=F64, requires_grad=True)
    t = torch.full((1, 1), math.log(3.0), dtype=F64)
    loss = bckd_cls_loss(s, t, avg_factor=1.0)
    assert loss.item() == pytest.approx(0.25 * math.log(2), rel=1e-14)
    (grad,) = torch.autograd.grad(loss, s)
    # d/dz [|q - p| BCE] = sign(p - q) p (1 - p) BCE + |q - p| (p - q): w is differentiated
    assert grad.item() == pytest.approx(-0.25 * math.log(2) - 0.0625, rel=1e-14)
    # where the student matches the teacher: loss and gradient 0
    match = t.clone().requires_grad_(True)
    assert bckd_cls_per_row(match, t).item() == 0
    (g0,) = torch.autograd.grad(bckd_cls_per_row(match, t).sum(), match)
    assert g0.item() == 0


def test_cls_matches_a_naive_loop_in_value_and_gradient():
    s, t, g = _logits(0, 6, 4)
    w = torch.rand(6, generator=g, dtype=F64)
    ours = BCKDClsLoss(loss_weight=1.5)(s, t, weight=w, avg_factor=2.5)
    ref = 1.5 * (w * _naive_cls(s, t)).sum() / 2.5
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
    g_ours = torch.autograd.grad(ours, s)[0]
    g_ref = torch.autograd.grad(ref, s)[0]
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-14)
    # no avg_factor: a weighted mean
    assert bckd_cls_loss(s, t, weight=w).item() == pytest.approx(
        ((w * _naive_cls(s, t)).sum() / w.sum()).item(), rel=1e-12)


def test_cls_weight_is_differentiated_and_the_teacher_gets_no_gradient():
    s, t, _ = _logits(1, 5, 3)
    t = t.requires_grad_(True)
    loss = bckd_cls_loss(s, t, avg_factor=1.0)
    (g,) = torch.autograd.grad(loss, s)
    assert t.grad is None
    # with w_ij held constant the gradient would be |q - p| (p - q) alone: it differs
    p, q = s.detach().sigmoid(), t.detach().sigmoid()
    assert not torch.allclose(g, (q - p).abs() * (p - q))


def test_cls_is_crosskd_quality_focal_kd_at_beta_1_and_finite_for_large_logits():
    s, t, g = _logits(2, 7, 5, scale=40.0)  # saturated sigmoids: logsigmoid stays finite
    w = torch.rand(7, generator=g, dtype=F64)
    ours = bckd_cls_loss(s, t, weight=w, avg_factor=3.0)
    ref = QFLKDLoss(beta=1.0)(s, t, weight=w, avg_factor=3.0)
    assert torch.isfinite(ours)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-10)
    torch.testing.assert_close(torch.autograd.grad(ours, s)[0],
                               torch.autograd.grad(ref, s)[0], rtol=1e-9, atol=1e-14)
    with pytest.raises(ValueError, match='differ in shape'):
        bckd_cls_per_row(s, t[:, :3])


# ------------------------------------------------------------------- localisation (B3)
def test_loc_hand_values():
    s = torch.tensor([[0., 0., 2., 2.], [0., 0., 1., 1.], [0., 0., 4., 4.]], dtype=F64)
    t = torch.tensor([[1., 0., 3., 2.], [2., 2., 3., 3.], [1., 1., 3., 3.]], dtype=F64)
    # IoU 1/3 (overlap 2, union 6); disjoint; inside (4 / 16)
    torch.testing.assert_close(bckd_loc_per_box(s, t, 'iou'),
                               torch.tensor([2 / 3, 1.0, 0.75], dtype=F64))
    # GIoU: the enclosing box adds (C - U) / C: 0, 7/9 (C = 9, U = 2), 0
    torch.testing.assert_close(bckd_loc_per_box(s, t, 'giou'),
                               torch.tensor([2 / 3, 1 + 7 / 9, 0.75], dtype=F64))


@pytest.mark.parametrize('mode', ['iou', 'giou'])
def test_loc_matches_a_naive_loop_in_value_and_gradient(mode):
    student, teacher, g = _boxes(3, 8)
    w = torch.rand(8, generator=g, dtype=F64)
    ours = BCKDLocLoss(mode=mode, loss_weight=4.0)(student, teacher, weight=w, avg_factor=3.0)
    per_box = torch.stack([1 - _naive_iou(student[i], teacher[i], mode == 'giou')
                           for i in range(8)])
    ref = 4.0 * (w * per_box).sum() / 3.0
    # mmdet's IoU clamps the union at eps = 1e-6: no effect on these boxes
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(torch.autograd.grad(ours, student)[0],
                               torch.autograd.grad(ref, student)[0], rtol=1e-10, atol=1e-14)


def test_loc_modes_are_checked_and_the_teacher_box_is_detached():
    with pytest.raises(ValueError, match="mode must be one of"):
        BCKDLocLoss(mode='log_iou')
    with pytest.raises(ValueError, match="mode must be one of"):
        bckd_loc_per_box(torch.zeros(1, 4), torch.zeros(1, 4), 'diou')
    student, teacher, _ = _boxes(4, 3)
    teacher.requires_grad_(True)
    BCKDLocLoss()(student, teacher).backward()
    assert teacher.grad is None and student.grad is not None
    assert repr(BCKDLocLoss(mode='giou', loss_weight=4.0)).endswith(
        "(mode='giou', loss_weight=4.0)")


# ------------------------------------------------------------------------- the region
def test_score_gap_region_is_the_largest_class_gap_detached():
    s = torch.tensor([[[0.0, 0.0], [2.0, -1.0], [1.0, 1.0]]], requires_grad=True)
    t = torch.tensor([[[math.log(3.0), 0.0], [2.0, 1.0], [1.0, 1.0]]])
    ctx = RegionContext(priors=[torch.zeros(3, 4)], gt_bboxes=[torch.zeros(0, 4)],
                        student_cls=s, teacher_cls=t)
    w = ScoreGapRegion()(ctx)
    expected = torch.tensor([[0.25, _sig(1.0) - _sig(-1.0), 0.0]])
    torch.testing.assert_close(w, expected)
    assert not w.requires_grad
    with pytest.raises(ValueError, match="ScoreGapRegion needs 'teacher_cls'"):
        ScoreGapRegion()(RegionContext(priors=[torch.zeros(3, 4)], gt_bboxes=[],
                                       student_cls=s))


def test_bckd_as_the_graph_runs_it_matches_the_equations_over_every_prior():
    """(B4) over a batch of 2 images x 5 priors x 3 classes, as the recipe's two edges run
    (region weights, ``keep = weight > 0``, the student's positives as the normaliser),
    against one loop over priors and classes: value and gradients of logits and boxes."""
    s, t, g = _logits(5, 10, 3)
    t[3] = s[3].detach()  # a prior where the two agree: weight 0, left out by the edge
    student, teacher, _ = _boxes(6, 10)
    pos_mask = torch.zeros(2, 5, dtype=torch.bool)
    pos_mask[0, 1] = pos_mask[1, 0] = pos_mask[1, 4] = True
    ctx = RegionContext(priors=[torch.zeros(5, 4)], gt_bboxes=[torch.zeros(0, 4)] * 2,
                        pos_mask=pos_mask, student_cls=s.detach().reshape(2, 5, 3),
                        teacher_cls=t.reshape(2, 5, 3))
    edges = [(BCKDClsLoss(1.0), s, t, torch.ones(2, 5, dtype=F64)),
             (BCKDLocLoss('iou', 4.0), student, teacher, ScoreGapRegion()(ctx))]
    total = 0
    for loss, a, b, weight in edges:
        keep = weight.reshape(-1) > 0
        w = weight.reshape(-1)[keep]
        total = total + loss(a[keep], b[keep], weight=w,
                             avg_factor=edge_normaliser(w, 'positives', pos_mask))
    assert edges[1][3].reshape(-1)[3] == 0 and edges[1][3].dtype == F64

    n_pos = 3.0
    cls_sum, loc_sum = 0, 0
    for i in range(10):
        gap = 0.0
        for j in range(3):
            p, q = _sig(s[i, j]), _sig(t[i, j])
            cls_sum = cls_sum + abs(q - p) * -((1 - q) * torch.log(1 - p) + q * torch.log(p))
            gap = max(gap, abs(q.item() - p.item()))  # max_j w_ij, a constant (detached)
        loc_sum = loc_sum + gap * (1 - _naive_iou(student[i], teacher[i]))
    ref = 1.0 * cls_sum / n_pos + 4.0 * loc_sum / n_pos  # (B4), alpha_1 = 1, alpha_2 = 4
    assert total.item() == pytest.approx(ref.item(), rel=1e-12)
    ours_g = torch.autograd.grad(total, [s, student])
    ref_g = torch.autograd.grad(ref, [s, student])
    for a, b in zip(ours_g, ref_g):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


# -------------------------------------------------------------------- the recipe, trained
STUDENT, TEACHER = 'configs/tiny/gfl_s_digits.py', 'configs/tiny/gfl_l_digits.py'
CKPT = 'checkpoints/gfl_l_digits_e24_seed0.pth'


def test_recipes_read_and_name_their_defaults():
    from distill.cli.train_distill import read_recipes
    for recipe, mode in (('bckd', 'iou'), ('bckd_published', 'giou')):
        edges, _ = read_recipes(recipe)
        cfg = {e['name']: e for e in edges}
        assert cfg['bckd_cls']['loss'] == dict(type='BCKDClsLoss', loss_weight=1.0)
        assert cfg['bckd_loc']['loss'] == dict(type='BCKDLocLoss', mode=mode, loss_weight=4.0)
        assert cfg['bckd_cls']['region']['type'] == 'AllRegion'
        assert cfg['bckd_loc']['region']['type'] == 'ScoreGapRegion'
        assert {e['normalize'] for e in edges} == {'positives'}


def test_bckd_trains_on_the_tiny_pair_with_the_shipped_teacher(repo):
    from distill.cli.train_distill import build_distill_config
    from tests.helpers import teacher_checker, train_iterations

    cfg = build_distill_config(str(repo / STUDENT), 'bckd', str(repo / TEACHER),
                               str(repo / CKPT))
    seen, models = {}, []
    check = teacher_checker(seen)  # the teacher stays in eval mode and gets no gradient

    def on_step(model, log_vars):
        check(model, log_vars)
        models.append(model)

    losses, touched = train_iterations(cfg, iterations=2, batch_size=2, subset=4,
                                       on_step=on_step)
    assert all(math.isfinite(x) for x in losses)
    for name in ('bckd_cls', 'bckd_loc'):
        assert 0 < seen[f'loss_{name}'] < float('inf'), name
    assert touched['architecture.bbox_head.gfl_cls.weight']
    model = models[-1]
    # the teacher's weights are still the shipped checkpoint's, bit for bit
    shipped = torch.load(str(repo / CKPT), map_location='cpu')['state_dict']
    teacher = model.teacher.state_dict()
    assert set(shipped) <= set(teacher)
    assert all(torch.equal(teacher[k].cpu(), v) for k, v in shipped.items())
    gap = model.last_regions['bckd_loc']
    assert gap.shape[0] == 2 and gap.min() >= 0 and gap.max() <= 1 and (gap > 0).any()
    assert torch.equal(model.last_regions['bckd_cls'], torch.ones_like(gap))
