"""Regions against a naive per-prior loop, and alpha_pos against mmdet's ATSSAssigner."""

import math
import statistics

import pytest
import torch
from mmdet.models.task_modules.assigners import ATSSAssigner
from mmengine.structures import InstanceData

from distill.regions import (
    AllRegion,
    GTBoxRegion,
    MainRegion,
    RegionContext,
    VLRRegion,
    atss_thresholds,
    iou_and_diou,
)


def _grid_priors(sizes, strides, scale):
    """Square anchors (side scale * stride) centred on each cell, level-major, row-major."""
    levels = []
    for (h, w), s in zip(sizes, strides):
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
        cx, cy = (xs.flatten() + 0.5) * s, (ys.flatten() + 0.5) * s
        half = scale * s / 2
        levels.append(torch.stack([cx - half, cy - half, cx + half, cy + half], 1).double())
    return levels


def _random_gts(g, n, size):
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * (size - 20)
    wh = 6 + torch.rand(n, 2, generator=g, dtype=torch.float64) * 60
    return torch.cat([xy, (xy + wh).clamp(max=size)], 1)


def _naive_iou_diou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    iou = inter / union
    d2 = ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + ((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2) ** 2
    c2 = (max(a[2], b[2]) - min(a[0], b[0])) ** 2 + (max(a[3], b[3]) - min(a[1], b[1])) ** 2
    return iou, iou - d2 / c2


def _naive_vlr(levels, gts, gamma, topk, pos):
    """Algorithm 1, one prior and one GT at a time."""
    priors = [p.tolist() for lvl in levels for p in lvl]
    alphas = []
    for gt in gts.tolist():
        cand, start = [], 0
        gcx, gcy = (gt[0] + gt[2]) / 2, (gt[1] + gt[3]) / 2
        for lvl in levels:
            dist = sorted(range(len(lvl)), key=lambda i: math.hypot(
                (priors[start + i][0] + priors[start + i][2]) / 2 - gcx,
                (priors[start + i][1] + priors[start + i][3]) / 2 - gcy))
            cand += [_naive_iou_diou(priors[start + i], gt)[0] for i in dist[:topk]]
            start += len(lvl)
        alphas.append(statistics.mean(cand) + statistics.stdev(cand))
    mask = []
    for i, p in enumerate(priors):
        inside = any(gamma * a <= _naive_iou_diou(p, gt)[1] <= a
                     for gt, a in zip(gts.tolist(), alphas))
        mask.append(inside and not pos[i])
    return torch.tensor(mask), torch.tensor(alphas, dtype=torch.float64)


def _ctx(levels, gts_list, pos=None, cls=None):
    return RegionContext(priors=levels, gt_bboxes=gts_list, pos_mask=pos, student_cls=cls)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_vlr_equals_naive_per_prior_loop(seed):
    g = torch.Generator().manual_seed(seed)
    levels = _grid_priors([(16, 16), (8, 8), (4, 4)], [8, 16, 32], scale=2)
    n = sum(len(lvl) for lvl in levels)
    gts = [_random_gts(g, k, 128) for k in (5, 1, 3)]  # padded to 5 inside
    pos = torch.rand(3, n, generator=g) < 0.05
    # the default is Algorithm 1: an indicator, the positives included
    got = VLRRegion(gamma=0.25, topk=9)(_ctx(levels, gts, pos))
    assert got.shape == (3, n) and set(got.unique().tolist()) <= {0.0, 1.0}
    # the departure: positives left out
    without_pos = VLRRegion(gamma=0.25, topk=9, exclude_positives=True)(_ctx(levels, gts, pos))
    for i in range(3):
        expected, _ = _naive_vlr(levels, gts[i], 0.25, 9, [False] * n)
        assert expected.sum() > 0
        assert torch.equal(got[i].bool(), expected), f'image {i}'
        expected_wo, _ = _naive_vlr(levels, gts[i], 0.25, 9, pos[i].tolist())
        assert torch.equal(without_pos[i].bool(), expected_wo), f'image {i}'
    # the positives inside the band are exactly what exclude_positives removes
    assert (got.bool() & pos).any()
    assert torch.equal(without_pos.bool(), got.bool() & ~pos)
    # the 'iou' weight is the IoU, in (0, 1], on exactly the same priors
    iou_w = VLRRegion(weight='iou')(_ctx(levels, gts, pos))
    assert torch.equal(iou_w > 0, got.bool()) and iou_w.max() <= 1
    # 'score': the student's max class probability on the same priors
    cls = torch.randn(3, n, 4, generator=g, dtype=torch.float64)
    score_w = VLRRegion(weight='score')(_ctx(levels, gts, pos, cls))
    torch.testing.assert_close(score_w, got * cls.sigmoid().max(-1).values)


def test_vlr_bounds_are_inclusive():
    """Algorithm 1, line 3: ``alpha_vl <= DIoU <= alpha_pos``. Two identical priors concentric
    with the GT: both are the ATSS candidates, so alpha_pos is exactly their IoU (std 0), and
    their DIoU is exactly their IoU (centre distance 0). With gamma = 1 the band is the single
    value alpha_pos: kept only if both bounds are inclusive."""
    box = torch.tensor([[0., 0., 16., 16.]], dtype=torch.float64)
    levels = [torch.cat([box, box])]
    gt = [torch.tensor([[2., 2., 14., 14.]], dtype=torch.float64)]
    iou, diou = iou_and_diou(levels[0], gt[0][None])
    alpha = atss_thresholds(levels[0], [2], gt[0][None], iou, topk=9)
    assert torch.equal(diou[0, :, 0], alpha[0].expand(2))  # the boundary case, exactly
    assert VLRRegion(gamma=1.0)(_ctx(levels, gt)).tolist() == [[1.0, 1.0]]
    # the GT shifted by 1 px: DIoU < IoU = alpha_pos, outside the gamma = 1 band, inside the
    # gamma = 0.25 one
    shifted = [gt[0] + 1]
    assert VLRRegion(gamma=1.0)(_ctx(levels, shifted)).tolist() == [[0.0, 0.0]]
    assert VLRRegion(gamma=0.25)(_ctx(levels, shifted)).tolist() == [[1.0, 1.0]]


def test_iou_and_diou_against_naive():
    g = torch.Generator().manual_seed(5)
    a = _random_gts(g, 7, 100)
    b = _random_gts(g, 4, 100)
    iou, diou = iou_and_diou(a, b[None])
    for i in range(7):
        for j in range(4):
            e_iou, e_diou = _naive_iou_diou(a[i].tolist(), b[j].tolist())
            assert iou[0, i, j].item() == pytest.approx(e_iou, abs=1e-12)
            assert diou[0, i, j].item() == pytest.approx(e_diou, abs=1e-12)


def test_alpha_pos_is_mmdet_atss_threshold():
    """mmdet's ATSSAssigner makes positive exactly the candidates with IoU >= alpha_pos whose
    centre is inside the GT: recover that set from our thresholds and compare."""
    g = torch.Generator().manual_seed(3)
    levels = _grid_priors([(16, 16), (8, 8), (4, 4)], [8, 16, 32], scale=2)
    priors = torch.cat(levels).float()
    gts = _random_gts(g, 6, 128).float()
    nl = [len(lvl) for lvl in levels]
    res = ATSSAssigner(topk=9).assign(InstanceData(priors=priors), nl,
                                      InstanceData(bboxes=gts, labels=torch.zeros(6).long()))
    iou, _ = iou_and_diou(priors, gts[None])
    alpha = atss_thresholds(priors, nl, gts[None], iou, topk=9)[0]
    cx = (priors[:, 0] + priors[:, 2]) / 2
    cy = (priors[:, 1] + priors[:, 3]) / 2
    for j in range(6):
        assigned = set((res.gt_inds == j + 1).nonzero().flatten().tolist())
        # our candidates: the 9 closest per level, same as the assigner
        cand, start = [], 0
        d = ((cx - (gts[j, 0] + gts[j, 2]) / 2) ** 2 + (cy - (gts[j, 1] + gts[j, 3]) / 2) ** 2)
        for k in nl:
            cand += (d[start:start + k].topk(9, largest=False).indices + start).tolist()
            start += k
        inside = lambda i: gts[j, 0] < cx[i] < gts[j, 2] and gts[j, 1] < cy[i] < gts[j, 3]  # noqa
        ours = {i for i in cand if iou[0, i, j] >= alpha[j] and inside(i)}
        # a prior claimed by two GTs goes to the larger IoU in mmdet: compare the rest
        contested = {i for i in ours if res.gt_inds[i] != j + 1}
        assert assigned == ours - contested
        assert len(assigned) > 0


def test_main_gt_box_and_all_regions():
    levels = _grid_priors([(4, 4), (2, 2)], [8, 16], scale=2)
    n = 20
    pos = torch.zeros(2, n, dtype=torch.bool)
    pos[0, [1, 5]] = True
    pos[1, 19] = True
    cls = torch.randn(2, n, 3)
    gts = [torch.tensor([[0.0, 0.0, 17.0, 9.0]]), torch.zeros(0, 4)]
    ctx = _ctx(levels, gts, pos, cls)
    main = MainRegion()(ctx)
    expected = pos.float() * cls.sigmoid().max(-1).values
    torch.testing.assert_close(main, expected)
    assert torch.equal(MainRegion(weight='ones')(ctx), pos.float())
    inside = GTBoxRegion()(ctx)
    # centres (4, 4), (12, 4) of level 0 and (8, 8) of level 1 lie in [0, 17] x [0, 9]
    assert inside[0].nonzero().flatten().tolist() == [0, 1, 16]
    assert inside[1].sum() == 0
    assert torch.equal(AllRegion()(ctx), torch.ones(2, n, dtype=torch.float64))
    assert VLRRegion()(_ctx(levels, [torch.zeros(0, 4)] * 2, pos)).sum() == 0
    with pytest.raises(ValueError, match='pos_mask'):
        MainRegion()(_ctx(levels, gts))
