"""Derived head outputs (GFL's integral, box decoding) and SALT's joint-score logits."""

import math

import pytest
import torch
from mmdet.models.dense_heads.gfl_head import Integral

from distill.graph.outputs import dist_to_ltrb, ltrb_to_boxes
from distill.models import joint_logits


def test_dist_to_ltrb_hand_cases():
    """reg_max = 4 (values 0..4). Side 0 uniform -> 2 = reg_max / 2; side 1 one-hot-ish at 3
    (logit 100, the others 0) -> 3; side 2 logits (0, ln 3, 0, 0, 0): probabilities
    (1, 3, 1, 1, 1) / 7 -> (0 + 3 + 2 + 3 + 4) / 7 = 12 / 7; side 3 half-half on 0 and 4 -> 2.
    """
    dist = torch.tensor([[0.] * 5, [0., 0., 0., 100., 0.], [0., math.log(3), 0., 0., 0.],
                         [0., -100., -100., -100., 0.]])
    ltrb = dist_to_ltrb(dist.reshape(1, 1, 20), reg_max=4)
    assert ltrb.shape == (1, 1, 4)
    torch.testing.assert_close(ltrb.flatten(), torch.tensor([2., 3., 12 / 7, 2.]))


@pytest.mark.parametrize('reg_max', [4, 7, 16])
def test_dist_to_ltrb_matches_mmdet_integral(reg_max):
    g = torch.Generator().manual_seed(reg_max)
    dist = (torch.randn(2, 5, 4 * (reg_max + 1), generator=g) * 3).requires_grad_()
    ours = dist_to_ltrb(dist, reg_max)
    ref = Integral(reg_max)(dist.reshape(-1, 4 * (reg_max + 1))).reshape(2, 5, 4)
    torch.testing.assert_close(ours, ref)
    assert ((ours >= 0) & (ours <= reg_max)).all()
    w = torch.randn(2, 5, 4, generator=g)
    (grad,) = torch.autograd.grad((ours * w).sum(), dist)
    (grad_ref,) = torch.autograd.grad((ref * w).sum(), dist)
    torch.testing.assert_close(grad, grad_ref)


def test_ltrb_to_boxes_hand_case():
    """Prior 0: a point prior (8, 8, 8, 8), centre (8, 8), stride 8; prior 1: box (0, 0, 32,
    32), centre (16, 16), stride 16.

    Image 0: ltrb (1, 2, 3, 4) -> (8 - 8, 8 - 16, 8 + 24, 8 + 32) = (0, -8, 32, 40);
             ltrb (0.5, 0, 1, 2) -> (16 - 8, 16 - 0, 16 + 16, 16 + 32) = (8, 16, 32, 48).
    Image 1: zero distances -> the centres.
    """
    priors = torch.tensor([[8., 8., 8., 8.], [0., 0., 32., 32.]])
    strides = torch.tensor([8., 16.])
    ltrb = torch.tensor([[[1., 2., 3., 4.], [0.5, 0., 1., 2.]], [[0.] * 4, [0.] * 4]])
    boxes = ltrb_to_boxes(ltrb, priors, strides)
    expected = torch.tensor([[[0., -8., 32., 40.], [8., 16., 32., 48.]],
                             [[8., 8., 8., 8.], [16., 16., 16., 16.]]])
    torch.testing.assert_close(boxes, expected, rtol=0, atol=0)


def test_ltrb_to_boxes_gradient_and_dtype():
    """d(x1, y1, x2, y2)/d(l, t, r, b) = stride * (-1, -1, 1, 1); float64 distances keep
    their dtype with float32 priors."""
    priors = torch.tensor([[4., 4., 4., 4.], [8., 8., 24., 24.]])
    strides = torch.tensor([8., 32.])
    ltrb = torch.rand(3, 2, 4, dtype=torch.float64, requires_grad=True)
    boxes = ltrb_to_boxes(ltrb, priors, strides)
    assert boxes.dtype == torch.float64
    boxes.sum().backward()
    sign = torch.tensor([-1., -1., 1., 1.], dtype=torch.float64)
    torch.testing.assert_close(ltrb.grad, (strides.double()[:, None] * sign).expand(3, 2, 4))


def _grid(values, dtype):
    v = torch.tensor(values, dtype=dtype)
    return v[:, None].expand(-1, len(values)).reshape(-1), v.repeat(len(values))


VALUES = [-100., -30., -8., -1., -0.1, 0., 0.5, 2., 8., 15., 30., 100., 1e4]


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_joint_logits_sigmoid_is_the_product(dtype):
    """sigmoid(joint) == sigmoid(cls) * sigmoid(q) on every pair of VALUES, large ones
    included (finite, no NaN); relative agreement for tiny probabilities."""
    c, q = _grid(VALUES, dtype)
    c.requires_grad_()
    q.requires_grad_()
    z = joint_logits(c, q)
    assert torch.isfinite(z).all()
    p = torch.sigmoid(c.detach()) * torch.sigmoid(q.detach())
    torch.testing.assert_close(torch.sigmoid(z.detach()), p, rtol=1e-5, atol=2e-6)
    # below 1/2, the logit itself against Python floats (p down to e^-200 ~ 1e-87)
    p_ref = [1 / (1 + math.exp(-a)) / (1 + math.exp(-b)) for a, b in zip(c.tolist(), q.tolist())]
    small = torch.tensor([pk < 0.5 for pk in p_ref])
    ref = [math.log(pk) - math.log1p(-pk) for pk in p_ref if pk < 0.5]
    torch.testing.assert_close(z.detach()[small], torch.tensor(ref, dtype=dtype))
    z.sum().backward()
    assert torch.isfinite(c.grad).all() and torch.isfinite(q.grad).all()


def test_joint_logits_keeps_the_shape_and_broadcasts_quality():
    """cls (B, K, H, W) with quality (B, 1, H, W): each class's score times the location's."""
    g = torch.Generator().manual_seed(0)
    cls = torch.randn(2, 3, 4, 5, generator=g)
    q = torch.randn(2, 1, 4, 5, generator=g)
    z = joint_logits(cls, q)
    assert z.shape == cls.shape
    torch.testing.assert_close(torch.sigmoid(z), torch.sigmoid(cls) * torch.sigmoid(q))


def test_joint_logits_gradient_matches_plain_logit_in_float64():
    """Moderate values: autograd of ``logit(sigmoid(c) * sigmoid(q))`` is the reference."""
    g = torch.Generator().manual_seed(1)
    c = (torch.rand(500, generator=g, dtype=torch.float64) * 16 - 8).requires_grad_()
    q = (torch.rand(500, generator=g, dtype=torch.float64) * 16 - 8).requires_grad_()
    w = torch.randn(500, generator=g, dtype=torch.float64)
    z = joint_logits(c, q)
    ref = torch.logit(torch.sigmoid(c) * torch.sigmoid(q))
    torch.testing.assert_close(z, ref, rtol=1e-9, atol=1e-9)
    grads = torch.autograd.grad((z * w).sum(), (c, q))
    refs = torch.autograd.grad((ref * w).sum(), (c, q))
    for grad, grad_ref in zip(grads, refs):
        torch.testing.assert_close(grad, grad_ref, rtol=1e-7, atol=1e-9)
    # by hand: d logit(p) / dc = (1 - sigmoid(c)) / (1 - p)
    p = torch.sigmoid(c) * torch.sigmoid(q)
    torch.testing.assert_close(grads[0], (w * (1 - torch.sigmoid(c)) / (1 - p)).detach(),
                               rtol=1e-7, atol=1e-9)


def test_heads_declare_their_outputs_along_the_mro():
    """mmdet's LDHead (a GFLHead subclass) inherits GFL's names; SALT-Net adds its stage-1
    boxes; ATSS has deltas, not distributions; TOOD and RTMDet (ATSS subclasses) have their
    own (distill/models/mmdet_heads.py); an undeclared head has none."""
    from mmdet.models.dense_heads import (
        ATSSHead,
        GFLHead,
        LDHead,
        RetinaHead,
        RTMDetSepBNHead,
        SSDHead,
        TOODHead,
    )

    from distill.graph.outputs import head_outputs
    from distill.models import SALTHead

    def names(cls):
        return set(head_outputs(cls.__new__(cls)))

    gfl = {'cls_logits', 'box_dist', 'boxes', 'labels', 'pos_mask', 'gt_boxes'}
    assert names(GFLHead) == gfl and names(LDHead) == gfl
    assert names(SALTHead) == gfl | {'box_stage1'}
    assert names(ATSSHead) == {'cls_logits', 'box_deltas', 'centerness', 'boxes', 'labels',
                               'pos_mask', 'gt_boxes'}
    # RetinaNet's assignment also ignores anchors (label weight 0): CrossKD's published recipe
    assert names(RetinaHead) == {'cls_logits', 'box_deltas', 'boxes', 'labels', 'pos_mask',
                                 'gt_boxes', 'label_weights'}
    assert names(TOODHead) == {'cls_logits', 'boxes', 'labels', 'pos_mask', 'gt_boxes'}
    assert names(RTMDetSepBNHead) == names(RetinaHead) - {'label_weights'}
    assert names(SSDHead) == set()
    # the stage-1 boxes are forward output 2, decoded from distances in strides
    spec = head_outputs(SALTHead.__new__(SALTHead))['box_stage1']
    assert (spec.tap, spec.index) == ('head', 2)
