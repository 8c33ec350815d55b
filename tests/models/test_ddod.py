"""DDOD: the cost-based assigner (vs mmdet's ATSSAssigner(alpha) and a naive loop), the level
weights of Eq. 3-4 and the two counters (separate, accumulated, in the state dict)."""

import pytest
import torch
from mmdet.models.task_modules.assigners import ATSSAssigner
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.structures import InstanceData

from distill.build import build_train_parts
from distill.models.assigners import DDODAssigner
from distill.models.ddod_head import count_positives, level_weights
from tests.helpers import record_outputs

CONFIG = 'configs/tiny/ddod_s_digits.py'


def _case(seed, sizes=((16, 16), (8, 8), (4, 4)), strides=(8, 16, 32), scale=2, gts=5):
    g = torch.Generator().manual_seed(seed)
    anchors = []
    for (h, w), s in zip(sizes, strides):
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
        c = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).float() * s
        anchors.append(torch.cat([c - scale * s / 2, c + scale * s / 2], -1))
    priors = torch.cat(anchors)
    n = len(priors)
    centres = (priors[:, :2] + priors[:, 2:]) / 2
    boxes = torch.cat([centres - torch.rand(n, 2, generator=g) * 30,
                       centres + torch.rand(n, 2, generator=g) * 30], -1)
    xy = torch.rand(gts, 2, generator=g) * 90
    gt = torch.cat([xy, xy + 10 + torch.rand(gts, 2, generator=g) * 40], -1)
    pred = InstanceData(priors=priors, bboxes=boxes, scores=torch.randn(n, 4, generator=g) * 2)
    truth = InstanceData(bboxes=gt, labels=torch.randint(0, 4, (gts,), generator=g))
    return pred, [h * w for h, w in sizes], truth


@pytest.mark.parametrize('alpha', [0.8, 0.5])
@pytest.mark.parametrize('seed', range(3))
def test_distance_candidates_equal_mmdets_atss_assigner_with_alpha(alpha, seed):
    pred, levels, gt = _case(seed)
    ours = DDODAssigner(alpha, candidates='distance').assign(pred, levels, gt)
    ref = ATSSAssigner(topk=9, alpha=alpha).assign(pred, levels, gt)
    assert (ours.gt_inds == ref.gt_inds).all()
    assert (ours.labels == ref.labels).all()
    assert (ours.gt_inds > 0).sum() > 0


@pytest.mark.parametrize('seed', range(3))
def test_cost_candidates_equal_a_naive_loop(seed):
    """The paper's reading (Sec. 4.1): per level the top-9 costs among the priors whose
    centres are inside the GT; positives: cost >= mean + std of those candidates."""
    pred, levels, gt = _case(seed)
    a = DDODAssigner(0.8, candidates='cost')
    ours = a.assign(pred, levels, gt)
    cost = a.cost(pred.scores, pred.bboxes, gt.bboxes, gt.labels)
    centres = (pred.priors[:, :2] + pred.priors[:, 2:]) / 2
    want = torch.zeros(len(centres), dtype=torch.long)
    best = torch.full((len(centres),), -1.0)
    for j, box in enumerate(gt.bboxes):
        cands, start = [], 0
        for n in levels:
            inside = [i for i in range(start, start + n)
                      if box[0] + 0.01 < centres[i, 0] < box[2] - 0.01
                      and box[1] + 0.01 < centres[i, 1] < box[3] - 0.01]
            cands += sorted(inside, key=lambda i: -float(cost[i, j]))[:9]
            start += n
        vals = torch.stack([cost[i, j] for i in cands])
        thr = vals.mean() + (vals.std() if len(vals) > 1 else 0)
        for i in cands:
            if cost[i, j] >= thr and cost[i, j] > best[i]:
                best[i], want[i] = cost[i, j], j + 1
    assert (ours.gt_inds == want).all()
    assert (want > 0).sum() >= len(gt)  # every GT got a positive in these cases


def test_cost_is_eq1_from_detached_predictions():
    pred, levels, gt = _case(0)
    scores = pred.scores.clone().requires_grad_()
    c = DDODAssigner(0.8).cost(scores, pred.bboxes, gt.bboxes, gt.labels)
    from mmdet.structures.bbox import bbox_overlaps
    want = scores.detach()[:, gt.labels].sigmoid() ** 0.2 * bbox_overlaps(pred.bboxes,
                                                                           gt.bboxes) ** 0.8
    torch.testing.assert_close(c, want)
    assert not c.requires_grad


def test_level_weights_are_eq3():
    w = level_weights(torch.tensor([100., 30., 10.], dtype=torch.float64))
    torch.testing.assert_close(w, torch.tensor([1.0, 2 - 20 / 90, 2.0], dtype=torch.float64))


def test_counters_are_separate_accumulate_and_are_saved(data_cache):
    cfg = Config.fromfile(CONFIG)
    model, dataset, _ = build_train_parts(cfg, 8, 0)
    head = model.bbox_head
    assert head.cls_level_pos.dtype == torch.float64
    assert not hasattr(head, 'cls_num_pos_samples_per_level')  # mmdet's lists are gone
    calls = record_outputs(head, 'get_targets')
    for step in range(2):
        batch = pseudo_collate([dataset[i] for i in range(4 * step, 4 * step + 4)])
        model(**model.data_preprocessor(batch, True), mode='loss')
    seen = [(count_positives(out[1], 10), count_positives(out[7], 10)) for out in calls]
    cls = seen[0][0] + seen[1][0]
    reg = seen[0][1] + seen[1][1]
    torch.testing.assert_close(head.cls_level_pos, cls)
    torch.testing.assert_close(head.reg_level_pos, reg)
    assert not torch.equal(cls, reg)  # the two assignments differ, so must the counters
    state = model.state_dict()
    torch.testing.assert_close(state['bbox_head.reg_level_pos'], reg)


def test_each_branch_is_weighted_by_its_own_counter(data_cache):
    """Eq. 5: the level-l classification loss is w_cls[l] x mmdet's unweighted one, the box
    losses w_reg[l] x theirs, with w from the counters after this step (Eq. 3-4)."""
    cfg = Config.fromfile(CONFIG)
    model, dataset, _ = build_train_parts(cfg, 8, 0)
    head = model.bbox_head
    head.cls_level_pos += torch.tensor([500., 50., 5.], dtype=torch.float64)
    head.reg_level_pos += torch.tensor([5., 500., 50.], dtype=torch.float64)
    calls = record_outputs(head, 'get_targets')
    batch = pseudo_collate([dataset[i] for i in range(4)])
    data = model.data_preprocessor(batch, True)
    feats = model.extract_feat(data['inputs'])
    outs = head(feats)
    losses = head.loss_by_feat(*outs, [s.gt_instances for s in data['data_samples']],
                               [s.metainfo for s in data['data_samples']])
    t = calls[-1]
    w_cls, w_reg = level_weights(head.cls_level_pos), level_weights(head.reg_level_pos)
    assert w_cls.argmax() == 2 and w_reg.argmax() == 0  # two different weightings
    cls_avg = max(float(t[5]), 1.0)
    reg_avg = max(float(t[11]), 1.0)
    for lv in range(3):
        plain, = head.loss_cls_by_feat_single(outs[0][lv], t[1][lv], t[2][lv], 1.0, cls_avg)
        torch.testing.assert_close(losses['loss_cls'][lv], float(w_cls[lv]) * plain)
        box, iou = head.loss_reg_by_feat_single(t[6][lv], outs[1][lv], outs[2][lv], t[7][lv],
                                                t[8][lv], t[9][lv], t[10][lv], 1.0, reg_avg)
        torch.testing.assert_close(losses['loss_bbox'][lv], float(w_reg[lv]) * box)
        torch.testing.assert_close(losses['loss_iou'][lv], float(w_reg[lv]) * iou)
