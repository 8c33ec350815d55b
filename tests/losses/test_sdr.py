"""SDR (SALT-Net Eq. 9) against hand-computed IoUs and GIoUs and mmdet 3.3's GIoULoss."""

import pytest
import torch
from mmdet.models.losses import GIoULoss

from distill.losses import SDRLoss, sdr_loss, sdr_per_box

GT = [0., 0., 10., 10.]
# Case A, IoU2 > IoU1. R1 = (0, 0, 5, 5): IoU1 = 25 / 100 = 0.25. R2 = (2, 2, 10, 10):
# IoU2 = 64 / 100 = 0.64. R1 & R2 = (2, 2, 5, 5), 9; union 25 + 64 - 9 = 80; enclosing box
# (0, 0, 10, 10), 100: GIoU = 9 / 80 - (100 - 80) / 100 = 0.1125 - 0.2 = -0.0875.
# Loss = 0.64 * (1 + 0.0875) = 0.696.
R1_A, R2_A, LOSS_A = [0., 0., 5., 5.], [2., 2., 10., 10.], 0.696
# Case B, IoU2 < IoU1: case A with the stages swapped -> 0.
R1_B, R2_B = R2_A, R1_A
# Case C, IoU2 > IoU1 with R1 inside R2: R1 = (0, 0, 5, 10), IoU1 = 0.5; R2 = (0, 0, 8, 10),
# IoU2 = 0.8; GIoU = 50 / 80 = 0.625 (R2 encloses both). Loss = 0.8 * 0.375 = 0.3.
R1_C, R2_C, LOSS_C = [0., 0., 5., 10.], [0., 0., 8., 10.], 0.3
# Case D, equal IoUs: R1 = (0, 0, 5, 10) and R2 = (0, 0, 10, 5), both 0.5 -> 0 (strict >),
# although 1 - GIoU(R1, R2) = 1 - (25 / 75 - 25 / 100) > 0.
R1_D, R2_D = [0., 0., 5., 10.], [0., 0., 10., 5.]


def _t(*rows, grad=False):
    return torch.tensor(rows, dtype=torch.float64, requires_grad=grad)


def _iou(a, b):
    """IoU of two (x1, y1, x2, y2) boxes with Python floats."""
    w = max(0., min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0., min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_hand_cases():
    r1, r2, gt = _t(R1_A, R1_B, R1_C, R1_D), _t(R2_A, R2_B, R2_C, R2_D), _t(GT, GT, GT, GT)
    torch.testing.assert_close(sdr_per_box(r1, r2, gt), _t(LOSS_A, 0., LOSS_C, 0.))
    # the zero of case D is the strict condition, not a zero GIoU loss
    giou_loss_d = GIoULoss(reduction='none')(r1[3:], r2[3:])
    torch.testing.assert_close(giou_loss_d, _t(1 - (1 / 3 - 1 / 4)))


def test_gradient_by_hand_reaches_stage1_only():
    """Case A: loss = IoU2 * (2 - I / U - U / E), I = (x2 - 2)(y2 - 2), U = 25 + 64 - I around
    R1 = (x1, y1, x2, y2) = (0, 0, 5, 5); E = (10 - x1)(10 - y1).

    d/dx2: dI = 3, dU = 5 - 3 = 2, dE = 0: d(I/U) = (3 * 80 - 9 * 2) / 6400 = 0.0346875,
    d(U/E) = 2 / 100 = 0.02 -> -0.64 * 0.0546875 = -0.035.
    d/dx1: dI = 0, dU = -5, dE = -10: d(I/U) = 9 * 5 / 6400 = 0.00703125,
    d(U/E) = (-5 * 100 + 80 * 10) / 10000 = 0.03 -> -0.64 * 0.03703125 = -0.0237.
    y1, y2 by symmetry.
    """
    r1, r2, gt = _t(R1_A, grad=True), _t(R2_A, grad=True), _t(GT, grad=True)
    sdr_per_box(r1, r2, gt).sum().backward()
    torch.testing.assert_close(r1.grad, _t([-0.0237, -0.0237, -0.035, -0.035]))
    assert r2.grad is None and gt.grad is None


def test_no_gradient_where_stage2_is_not_better():
    r1, r2, gt = _t(R1_B, R1_D, grad=True), _t(R2_B, R2_D, grad=True), _t(GT, GT)
    loss = sdr_per_box(r1, r2, gt)
    loss.sum().backward()
    assert (loss == 0).all()
    assert (r1.grad == 0).all() and r2.grad is None


@pytest.mark.parametrize('weight, avg_factor, expected', [
    ([0.5, 0.9, 0.25], 2.0, (0.5 * LOSS_A + 0.25 * LOSS_C) / 2),
    ([0.5, 0.9, 0.25], None, (0.5 * LOSS_A + 0.25 * LOSS_C) / 1.65),  # sum of the weights
    (None, None, (LOSS_A + LOSS_C) / 3),
    (None, 4.0, (LOSS_A + LOSS_C) / 4),
])
def test_sdr_loss_weighting_and_normaliser(weight, avg_factor, expected):
    r1, r2, gt = _t(R1_A, R1_B, R1_C, grad=True), _t(R2_A, R2_B, R2_C), _t(GT, GT, GT)
    y = None if weight is None else _t(*weight)
    loss = sdr_loss(r1, r2, gt_boxes=gt, weight=y, avg_factor=avg_factor)
    assert loss.shape == ()
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64))
    loss.backward()
    # row B (IoU2 < IoU1) gets no gradient; the weights scale the others
    assert (r1.grad[1] == 0).all() and (r1.grad[0] != 0).all()


def test_zero_weight_and_tensor_avg_factor():
    r1, r2, gt = _t(R1_A, R1_C), _t(R2_A, R2_C), _t(GT, GT)
    loss = sdr_loss(r1, r2, gt_boxes=gt, weight=_t(1., 0.), avg_factor=torch.tensor(0.5))
    torch.testing.assert_close(loss, torch.tensor(LOSS_A / 0.5, dtype=torch.float64))


def test_sdr_loss_module_loss_weight():
    r1, r2, gt = _t(R1_A, R1_C, grad=True), _t(R2_A, R2_C, grad=True), _t(GT, GT, grad=True)
    y = _t(0.3, 0.7)
    module = SDRLoss(loss_weight=2.5)
    loss = module(r1, r2, gt_boxes=gt, weight=y, avg_factor=2.0)
    torch.testing.assert_close(loss, torch.tensor(2.5 * (0.3 * LOSS_A + 0.7 * LOSS_C) / 2,
                                                  dtype=torch.float64))
    loss.backward()
    assert r1.grad is not None and r2.grad is None and gt.grad is None
    assert 'loss_weight=2.5' in repr(module)
    torch.testing.assert_close(SDRLoss()(r1, r2, gt_boxes=gt), sdr_loss(r1, r2, gt_boxes=gt))


def _random_boxes(g, m, scale=20.):
    xy = torch.rand(m, 2, generator=g, dtype=torch.float64) * scale
    wh = torch.rand(m, 2, generator=g, dtype=torch.float64) * scale + 1
    return torch.cat([xy, xy + wh], 1)


def test_random_boxes_against_mmdet_giou_loss():
    """``IoU2 * GIoULoss(R1, R2)`` where IoU2 > IoU1 (IoUs by hand), else 0; both branches
    occur."""
    g = torch.Generator().manual_seed(0)
    gt = _random_boxes(g, 200)
    r1, r2 = (gt + torch.randn(200, 4, generator=g, dtype=torch.float64) * 3 for _ in 'ab')
    for r in (r1, r2):  # keep x2 > x1, y2 > y1
        r[:, 2:] = torch.maximum(r[:, 2:], r[:, :2] + 0.5)
    r1.requires_grad_()
    iou1 = torch.tensor([_iou(a, b) for a, b in zip(r1.tolist(), gt.tolist())])
    iou2 = torch.tensor([_iou(a, b) for a, b in zip(r2.tolist(), gt.tolist())])
    better = iou2 > iou1
    assert 20 < better.sum() < 180
    giou = GIoULoss(eps=1e-6, reduction='none')
    expected = torch.where(better, iou2.to(r1) * giou(r1, r2), 0.)
    loss = sdr_per_box(r1, r2, gt)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-9)
    # gradients: d/dR1 of IoU2 * GIoULoss(R1, R2) on the rows where it applies, else 0
    (grad,) = torch.autograd.grad(loss.sum(), r1)
    (ref,) = torch.autograd.grad(expected.sum(), r1)
    torch.testing.assert_close(grad, ref, rtol=1e-6, atol=1e-9)
    assert (grad[~better] == 0).all()
