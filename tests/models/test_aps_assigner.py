"""MOD's APS assigner: the batched assignment against the per-GT reference (a loop with
scikit-learn's GMM per GT, the published code's way), and Eq. 3-5 on a hand-built case."""

import pytest
import torch

from distill.models.assigners import APSAssigner
from distill.models.assigners.aps_assigner import focal_as_positive
from distill.models.assigners.aps_reference import aps_assign_per_gt
from distill.ops.extension import use_compiled
from distill.ops.point_sample import compiled_available
from distill.regions.base import pad_per_image

#: APS's compiled ops (focal_neg_sum, gmm_split) run on the CPU only where distill._C is built
needs_ext = pytest.mark.skipif(not compiled_available('cpu'),
                               reason='distill._C is not built (DISTILL_NO_EXT=1 or no build)')


def _grid(sizes, strides):
    pts = []
    for (h, w), s in zip(sizes, strides):
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
        pts.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).float() * s + s // 2)
    return torch.cat(pts), [h * w for h, w in sizes]


def _batch(seed, b=3, img=128, classes=5, max_gts=6):
    g = torch.Generator().manual_seed(seed)
    points, sizes = _grid([(img // s, img // s) for s in (8, 16, 32)], (8, 16, 32))
    n = len(points)
    logits = torch.randn(b, n, classes, generator=g) * 2
    ltrb = torch.rand(b, n, 4, generator=g) * 40
    boxes = torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], -1)
    gts, labels = [], []
    for i in range(b):
        k = int(torch.randint(0, max_gts + 1, (1,), generator=g)) if i else max_gts
        xy = torch.rand(k, 2, generator=g) * (img - 40)
        wh = 8 + torch.rand(k, 2, generator=g) * 60
        gts.append(torch.cat([xy, (xy + wh).clamp(max=img)], -1))
        labels.append(torch.randint(0, classes, (k,), generator=g))
    return points, sizes, logits, boxes, gts, labels


def _pad(gts, labels):
    boxes, valid = pad_per_image(gts, torch.zeros(0))
    return boxes, pad_per_image(labels, torch.zeros(0))[0], valid


@pytest.mark.parametrize('compiled', [pytest.param(True, marks=needs_ext), False],
                         ids=['compiled', 'torch_ops'])
@pytest.mark.parametrize('seed', range(6))
def test_batched_equals_the_per_gt_sklearn_loop(seed, compiled):
    """With distill._C's focal negative sum and GMM (skipped where not built) and with PyTorch
    ops only."""
    assigner = APSAssigner(topk=9, num_levels=2, reg_weight=2.0)
    points, sizes, logits, boxes, gts, labels = _batch(seed)
    with use_compiled(compiled):
        ours, positives = assigner.assign_batch(points, sizes, logits, boxes,
                                                *_pad(gts, labels))
    ref = aps_assign_per_gt(assigner, points, sizes, logits, boxes, gts, labels)
    assert (ours == ref).all(), f'{int((ours != ref).sum())} locations differ'
    assert (ours >= 0).sum() > 0  # the case assigns something
    # every positive lies inside its GT box, on at most 2 levels, at most 2 x 9 per GT
    pg, _, _ = _pad(gts, labels)
    for i in range(len(gts)):
        for j in range(len(gts[i])):
            mine = positives[i, j].nonzero().squeeze(1)
            assert len(mine) <= 18
            lv = torch.bucketize(mine, torch.tensor(sizes).cumsum(0), right=True)
            assert len(lv.unique()) <= 2
            p = points[mine]
            assert ((p > pg[i, j, :2]) & (p < pg[i, j, 2:])).all()


def test_focal_as_positive_is_the_focal_loss_with_the_gt_class_as_target():
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss
    logits = torch.randn(2, 7, 4)
    labels = torch.tensor([[1, 3], [0, 2]])
    ours = focal_as_positive(logits, labels)
    for i in range(2):
        for j in range(2):
            onehot = torch.nn.functional.one_hot(labels[i, j].expand(7), 4).float()
            want = py_sigmoid_focal_loss(logits[i], onehot, reduction='none').sum(-1)
            torch.testing.assert_close(ours[i, j], want)


def test_levels_and_topk_on_a_hand_built_case():
    # 1 GT covering x in (0, 40), two levels: level 0 has 5 points inside, level 1 has 2
    pts = torch.tensor([[4., 4], [12, 4], [20, 4], [28, 4], [36, 4], [60, 4],
                        [8., 4], [24, 4], [56, 4]])
    sizes = [6, 3]
    gt = torch.tensor([[[0., 0, 40, 8]]])
    # predicted boxes: exact at level 1 (L_reg 0), poor at level 0
    boxes = torch.cat([pts - torch.tensor([20., 4]), pts + torch.tensor([20., 4])], -1)[None]
    boxes[0, 6:] = gt[0, 0]
    logits = torch.full((1, 9, 2), -4.0)
    logits[0, :, 0] = 4.0  # confident of class 0 everywhere: a low L_cls
    a = APSAssigner(topk=3, num_levels=1)
    index, pos = a.assign_batch(pts, sizes, logits, boxes, gt, torch.zeros(1, 1).long(),
                                torch.ones(1, 1, dtype=torch.bool))
    # Eq. 5 keeps the level of lowest mean loss: level 1 (its inside points are exact)
    assert pos[0, 0, :6].sum() == 0 and pos[0, 0, 6:8].any() and not pos[0, 0, 8]
    # the point at x = 60 / 56 is outside the GT: never a candidate
    assert index[0, 5] == -1 and index[0, 8] == -1


def test_no_gt_and_mmdet_interface():
    from mmengine.structures import InstanceData
    points, sizes, logits, boxes, gts, labels = _batch(0, b=1)
    a = APSAssigner()
    empty = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
    pred = InstanceData(priors=points, scores=logits[0], bboxes=boxes[0])
    r = a.assign(pred, sizes, empty)
    assert (r.gt_inds == 0).all() and (r.labels == -1).all()
    r = a.assign(pred, sizes, InstanceData(bboxes=gts[0], labels=labels[0]))
    ref = aps_assign_per_gt(a, points, sizes, logits, boxes, gts, labels)[0]
    assert (r.gt_inds == ref + 1).all()
    assert (r.labels[ref >= 0] == labels[0][ref[ref >= 0]]).all()


def test_giou_loss_pairs_is_one_minus_mmdets_giou():
    from mmdet.structures.bbox import bbox_overlaps

    from distill.models.assigners.aps_assigner import giou_loss_pairs
    _, _, _, boxes, gts, _ = _batch(2, b=2)
    pg, _, _ = _pad(gts, [torch.zeros(len(t)).long() for t in gts])
    torch.testing.assert_close(giou_loss_pairs(boxes, pg),
                               1 - bbox_overlaps(pg, boxes, mode='giou'))


def test_duplicate_gts_go_to_the_first():
    assigner = APSAssigner(reg_weight=2.0)
    points, sizes, logits, boxes, gts, labels = _batch(0)
    gts[0] = torch.cat([gts[0][:1], gts[0]])  # GT 0 annotated twice
    labels[0] = torch.cat([labels[0][:1], labels[0]])
    ours, positives = assigner.assign_batch(points, sizes, logits, boxes, *_pad(gts, labels))
    assert torch.equal(positives[0, 0], positives[0, 1]) and positives[0, 0].any()
    assert not (ours[0] == 1).any() and (ours[0] == 0).any()
    assert (ours == aps_assign_per_gt(assigner, points, sizes, logits, boxes, gts, labels)).all()
