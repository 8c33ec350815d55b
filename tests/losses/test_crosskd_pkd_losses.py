"""CrossKD's losses (quality-focal KD, box GIoU) and PKD against hand values and the
references: mmdet 3.3's GIoULoss and mmrazor 1.0's PKDLoss, in value and gradient."""

import math

import pytest
import torch

import distill  # noqa: F401  (distill.compat before mmrazor)
from distill.losses import IoUKDLoss, PKDFeatureLoss, QFLKDLoss, qfl_kd_loss
from distill.regions import RegionContext, TeacherScoreRegion


def _sigmoid(z):
    return 1 / (1 + math.exp(-z))


def test_qfl_kd_matches_a_naive_loop():
    s = [[0.3, -1.0, 2.0], [0.0, 0.5, -0.2]]
    t = [[1.0, -2.0, 0.5], [-1.0, 0.0, 3.0]]
    w = [0.4, 1.5]
    for beta in (0.0, 1.0, 2.0):
        rows = []
        for zs_row, zt_row in zip(s, t):
            total = 0.0
            for zs, zt in zip(zs_row, zt_row):
                p, q = _sigmoid(zs), _sigmoid(zt)
                bce = -(q * math.log(p) + (1 - q) * math.log(1 - p))
                total += bce * abs(p - q) ** beta
            rows.append(total)
        expected = (w[0] * rows[0] + w[1] * rows[1]) / 3.0
        got = QFLKDLoss(beta=beta, loss_weight=2.0)(
            torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64),
            weight=torch.tensor(w, dtype=torch.float64), avg_factor=3.0)
        assert got.item() == pytest.approx(2.0 * expected, rel=1e-12)


def test_qfl_kd_gradient_vanishes_where_the_student_matches_and_skips_the_teacher():
    t = torch.tensor([[0.7, -0.3]], requires_grad=True)
    s = t.detach().clone().requires_grad_(True)
    qfl_kd_loss(s, t, beta=1.0).backward()
    # BCE's gradient sigma(s) - sigma(t) is 0 at the target, and so is |diff|^beta
    assert torch.allclose(s.grad, torch.zeros_like(s))
    assert t.grad is None


def _box_pair(seed, n, shift, scale):
    """Random student boxes (with a gradient) and teacher boxes moved by ``shift``, sides
    scaled by ``scale``; and the generator, for more draws."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 50
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 40 + 1
    student = torch.cat([xy, xy + wh], 1).requires_grad_(True)
    return student, torch.cat([xy + shift, xy + wh * scale], 1), g


def test_giou_kd_equals_mmdet_giou_loss_in_value_and_gradient():
    from mmdet.models.losses import GIoULoss
    student, teacher, g = _box_pair(0, 7, 3, 0.8)
    w = torch.rand(7, generator=g, dtype=torch.float64)
    ours = IoUKDLoss(loss_weight=2.0)(student, teacher, weight=w, avg_factor=w.sum())
    (ours_grad,) = torch.autograd.grad(ours, student)
    ref = GIoULoss(loss_weight=2.0, eps=1e-6)(student, teacher, weight=w, avg_factor=w.sum())
    (ref_grad,) = torch.autograd.grad(ref, student)
    # mmdet adds float32 eps to avg_factor
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(ours_grad, ref_grad, rtol=1e-6, atol=1e-9)


def test_log_iou_kd_equals_mmdet_iou_loss_and_modes_are_checked():
    from mmdet.models.losses import IoULoss
    student, teacher, _ = _box_pair(1, 5, 1, 1.1)
    ours = IoUKDLoss(mode='log_iou', loss_weight=0.75)(student, teacher, avg_factor=3.0)
    ref = IoULoss(mode='log', loss_weight=0.75)(student, teacher, avg_factor=3.0)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(torch.autograd.grad(ours, student)[0],
                               torch.autograd.grad(ref, student)[0], rtol=1e-6, atol=1e-9)
    linear = IoUKDLoss(mode='iou')(student, teacher)
    assert linear.item() == pytest.approx(
        IoULoss(mode='linear')(student, teacher).item(), rel=1e-6)
    with pytest.raises(ValueError, match="mode must be one of"):
        IoUKDLoss(mode='diou')


def _maps(seed, shapes, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=dtype) * (1 + i) + i for i, s in
            enumerate(shapes)]


SHAPES = [(2, 6, 8, 8), (2, 6, 4, 4), (2, 6, 2, 2)]


def test_pkd_equals_mmrazor_pkd_loss_in_value_and_gradient():
    from mmrazor.models.losses import PKDLoss
    s = [m.requires_grad_(True) for m in _maps(1, SHAPES)]
    t = _maps(2, SHAPES)
    ours = PKDFeatureLoss(loss_weight=6.0)(s, t)
    ours_grad = torch.autograd.grad(ours, s)
    ref = PKDLoss(loss_weight=6.0)(tuple(s), tuple(t))
    ref_grad = torch.autograd.grad(ref, s)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
    for a, b in zip(ours_grad, ref_grad):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # the weight path with all ones is the same mean
    ones = [torch.ones(m.shape[0], 1, *m.shape[2:], dtype=m.dtype) for m in s]
    assert PKDFeatureLoss(6.0)(s, t, weight=ones).item() == pytest.approx(ref.item(),
                                                                          rel=1e-12)


def test_pkd_is_one_minus_pearson_and_weights_pick_locations():
    # one channel, one image: standardised MSE / 2 = (n - 1) / n * (1 - r)
    s = torch.tensor([[[[1.0, 2.0, 4.0, 7.0]]]], dtype=torch.float64)
    t = torch.tensor([[[[2.0, 1.0, 5.0, 6.0]]]], dtype=torch.float64)
    x, y = s.flatten(), t.flatten()
    r = ((x - x.mean()) * (y - y.mean())).sum() / (
        ((x - x.mean()) ** 2).sum().sqrt() * ((y - y.mean()) ** 2).sum().sqrt())
    n = 4
    assert PKDFeatureLoss()([s], [t]).item() == pytest.approx(
        ((n - 1) / n * (1 - r)).item(), rel=1e-5)
    # a weight of 0 drops a location from the mean (statistics stay those of the whole map)
    w = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]]], dtype=torch.float64)
    zs = (x - x.mean()) / (x.std() + 1e-6)
    zt = (y - y.mean()) / (y.std() + 1e-6)
    expected = ((zs - zt) ** 2)[:2].mean() / 2
    assert PKDFeatureLoss()([s], [t], weight=[w]).item() == pytest.approx(expected.item(),
                                                                          rel=1e-12)
    with pytest.raises(ValueError, match='avg_factor must be None'):
        PKDFeatureLoss()([s], [t], avg_factor=2.0)
    with pytest.raises(ValueError, match=r'level 0: student map \(1, 1, 1, 4\) vs teacher'):
        PKDFeatureLoss()([s], [t[..., :2]])


def test_teacher_score_region_is_the_max_sigmoid_per_prior():
    logits = torch.tensor([[[0.0, 2.0], [-1.0, -3.0]]])
    ctx = RegionContext(priors=[torch.zeros(2, 4)], gt_bboxes=[torch.zeros(0, 4)],
                        teacher_cls=logits)
    assert torch.allclose(TeacherScoreRegion()(ctx),
                          torch.tensor([[_sigmoid(2.0), _sigmoid(-1.0)]]))
    with pytest.raises(ValueError, match="TeacherScoreRegion needs 'teacher_cls'"):
        TeacherScoreRegion()(RegionContext(priors=[torch.zeros(2, 4)], gt_bboxes=[]))
