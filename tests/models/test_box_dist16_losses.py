"""DDOD and MOD with ``box_dist=16`` (GFL's general distribution as the box branch) against
naive loops: the decoded boxes of every prior (softmax over each side's 17 bins, expectation x
stride, distance2bbox around the prior's centre), and the box losses the head trains on (GIoU,
DFL with its ``4 x positives`` divisor, and the IoU / quality branch's target), with their
gradients, recomputed positive by positive from seeded random predictions and the head's own
assignment."""

import math

import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.structures import InstanceData

import distill.models  # noqa: F401 (registers the heads)
from tests.helpers import record_outputs

DDOD = 'configs/tiny/ddod_s_digits.py'
MOD = 'configs/tiny/mod_s_digits.py'
STRIDES = (8, 16, 32)
IMG = 128
BINS = 17


def _head(config):
    cfg = Config.fromfile(config)
    head = cfg.model.bbox_head
    head.update(box_dist=16, train_cfg=cfg.model.train_cfg, test_cfg=cfg.model.test_cfg)
    torch.manual_seed(0)
    head = MODELS.build(head)
    head.init_weights()
    return head


def _predictions(seed, extra):
    """Seeded class logits, distribution logits (requires_grad) and ``extra`` (IoU /
    quality) logits for 2 images of IMG x IMG, and their GTs."""
    g = torch.Generator().manual_seed(seed)
    sizes = [IMG // s for s in STRIDES]
    cls = [torch.randn(2, 10, n, n, generator=g) * 2 - 2 for n in sizes]
    # each side's bins tilted towards short distances (expectations of a few strides), so
    # that the cost-based assignments find positives on every level
    tilt = (-0.5 * torch.arange(float(BINS))).repeat(4)[None, :, None, None]
    dist = [(torch.randn(2, 4 * BINS, n, n, generator=g) * 1.5 + tilt).requires_grad_()
            for n in sizes]
    other = [torch.randn(2, extra, n, n, generator=g) for n in sizes]
    gts = [InstanceData(bboxes=torch.tensor([[6., 10, 50, 44], [40, 30, 118, 122],
                                             [70, 8, 90, 30]]),
                        labels=torch.tensor([1, 7, 3])),
           InstanceData(bboxes=torch.tensor([[20., 64, 60, 100], [3, 2, 125, 90]]),
                        labels=torch.tensor([0, 9]))]
    metas = [dict(img_shape=(IMG, IMG), pad_shape=(IMG, IMG), batch_input_shape=(IMG, IMG),
                  scale_factor=(1.0, 1.0))] * 2
    return cls, dist, other, gts, metas


def _centres(offset):
    """Every prior's centre and stride, level by level, row-major: ``((j + offset) s,
    (i + offset) s)`` (DDOD's anchors: offset 0; FCOS / MOD's points: 1/2)."""
    out = []
    for s in STRIDES:
        n = IMG // s
        out += [((j + offset) * s, (i + offset) * s, s) for i in range(n) for j in range(n)]
    return out


def _flat(maps, image):
    """Rows of one image, levels concatenated (mmdet's prior order)."""
    return torch.cat([m[image].permute(1, 2, 0).reshape(-1, m.shape[1]) for m in maps])


def naive_box(cx, cy, s, logits):
    """distance2bbox of the distribution's expectation: 4 sides, softmax over 17 bins each."""
    d = []
    for k in range(4):
        p = torch.softmax(logits[BINS * k:BINS * (k + 1)], 0)
        d.append(sum(p[b] * b for b in range(BINS)) * s)
    return torch.stack([cx - d[0], cy - d[1], cx + d[2], cy + d[3]])


def naive_iou_giou(a, b):
    """IoU and GIoU of two boxes, written out (mmdet's eps 1e-6 on union and hull)."""
    iw = (torch.min(a[2], b[2]) - torch.max(a[0], b[0])).clamp(min=0)
    ih = (torch.min(a[3], b[3]) - torch.max(a[1], b[1])).clamp(min=0)
    inter = iw * ih
    union = ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter).clamp(1e-6)
    hull = ((torch.max(a[2], b[2]) - torch.min(a[0], b[0]))
            * (torch.max(a[3], b[3]) - torch.min(a[1], b[1]))).clamp(1e-6)
    iou = inter / union
    return iou, iou - (hull - union) / hull


def naive_dfl(logits, target):
    """GFL Eq. 6 for one side: ``-((l + 1 - y) log p_l + (y - l) log p_{l+1})``."""
    logp = torch.log_softmax(logits, 0)
    left = math.floor(target)
    return -((left + 1 - target) * logp[left] + (target - left) * logp[left + 1])


def naive_dfl_sides(cx, cy, s, logits, gt, reg_max=16, eps=0.01):
    """DFL summed over the 4 sides, targets the GT's distances in strides clamped to
    ``[0, reg_max - eps]``."""
    sides = [cx - float(gt[0]), cy - float(gt[1]), float(gt[2]) - cx, float(gt[3]) - cy]
    return sum(naive_dfl(logits[BINS * k:BINS * (k + 1)], min(max(d / s, 0.0), reg_max - eps))
               for k, d in enumerate(sides))


def _check_decode(head, priors, centres, dist):
    for image in range(2):
        rows = _flat(dist, image).detach()
        got = head.bbox_coder.decode(priors, rows)
        want = torch.stack([naive_box(cx, cy, s, r) for (cx, cy, s), r in zip(centres, rows)])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4,
                                   msg=lambda m: f'decoded boxes differ: {m}')


def _check_grad(loss, naive, dist):
    got = torch.autograd.grad(loss, dist, retain_graph=True)
    want = torch.autograd.grad(naive, dist)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7,
                                   msg=lambda m: f'gradients differ: {m}')


@pytest.mark.parametrize('seed', range(2))
def test_ddod_box_dist_boxes_giou_dfl_and_iou_equal_naive_loops(seed):
    """DDOD: anchors of side 2 strides centred on ``(j s, i s)``; per level, the regression
    assignment's positives give ``w_l x 2 sum (1 - GIoU) / n``, ``w_l x 0.25 sum_sides DFL /
    (4 n)`` and the IoU branch's BCE against the IoU of the decoded box (``n`` the positives of
    the regression assignment, ``w_l`` Eq. 3-4 from this step's counts)."""
    head = _head(DDOD)
    cls, dist, iou, gts, metas = _predictions(seed, 1)
    centres = _centres(0.0)
    anchors = torch.tensor([[x - s, y - s, x + s, y + s] for x, y, s in centres])
    assert torch.equal(torch.cat(head.prior_generator.grid_priors(
        [m.shape[-2:] for m in cls], device='cpu')), anchors)
    _check_decode(head, anchors, centres, dist)

    targets = record_outputs(head, 'get_targets')
    losses = head.loss_by_feat(cls, dist, iou, gts, metas)
    reg_labels = torch.cat(targets[0][7], 1)  # [B, N]
    reg_boxes = torch.cat(targets[0][9], 1)  # [B, N, 4]: GT boxes (reg_decoded_bbox)
    pos = [(reg_labels[b] < 10).nonzero().squeeze(1).tolist() for b in range(2)]
    n = sum(max(len(p), 1) for p in pos)
    assert float(targets[0][11]) == n and all(len(p) > 0 for p in pos)
    starts = [0]
    for s in STRIDES:
        starts.append(starts[-1] + (IMG // s) ** 2)
    level = [[sum(starts[lv + 1] <= i for lv in range(3)) for i in p] for p in pos]
    counts = torch.tensor([sum(lv.count(k) for lv in level) for k in range(3)], dtype=torch.float)
    assert (counts > 0).sum() >= 2 and counts.max() > counts.min()  # unequal level weights
    w = 2 - (counts - counts.min()) / (counts.max() - counts.min() + 1e-10)  # Eq. 3-4

    box, dfl, iou_loss = [torch.zeros(()) for _ in range(3)], [0.0] * 3, [0.0] * 3
    iou_rows = [_flat(iou, b).squeeze(1) for b in range(2)]  # BCE at the positives only
    for b in range(2):
        rows = _flat(dist, b)
        for i, lv in zip(pos[b], level[b]):
            cx, cy, s = centres[i]
            gt = reg_boxes[b, i]
            pred = naive_box(cx, cy, s, rows[i])
            overlap, giou = naive_iou_giou(pred, gt)
            box[lv] = box[lv] + 2.0 * (1 - giou)
            dfl[lv] = dfl[lv] + 0.25 * naive_dfl_sides(cx, cy, s, rows[i], gt)
            iou_loss[lv] += float(F.binary_cross_entropy_with_logits(iou_rows[b][i],
                                                                     overlap.detach()))
    for lv in range(3):
        torch.testing.assert_close(losses['loss_bbox'][lv], w[lv] * box[lv] / n,
                                   msg=lambda m: f'level {lv} GIoU loss: {m}')
        if counts[lv] > 0:  # the DFL divisor, 4 x positives, from the naive weighted sum
            div = float(w[lv] * dfl[lv] / losses['loss_dfl'][lv])
            assert div == pytest.approx(4 * n, rel=1e-5), \
                f'level {lv}: DFL divided by {div}, want 4 x {n} positives'
        torch.testing.assert_close(losses['loss_dfl'][lv], w[lv] * dfl[lv] / (4 * n),
                                   msg=lambda m: f'level {lv} DFL: {m}')
        assert float(losses['loss_iou'][lv]) == pytest.approx(float(w[lv]) * iou_loss[lv] / n,
                                                              rel=1e-5), f'level {lv} IoU loss'
    _check_grad(sum(losses['loss_bbox']) + sum(losses['loss_dfl']),
                sum(w[lv] * (box[lv] / n + dfl[lv] / (4 * n)) for lv in range(3)), dist)


@pytest.mark.parametrize('seed', range(2))
def test_mod_box_dist_boxes_giou_dfl_and_quality_equal_naive_loops(seed):
    """MOD (FCOS points at ``((j + 1/2) s, (i + 1/2) s)``, its APS assignment): over the
    positives, ``2 sum (1 - GIoU) / n``, ``0.25 sum_sides DFL / (4 n)`` and the quality
    branch's BCE against the clamped GIoU of the decoded box, ``n`` the positives."""
    head = _head(MOD)
    cls, dist, quality, gts, metas = _predictions(seed, 1)
    centres = _centres(0.5)
    points = torch.tensor([[x, y, s, s] for x, y, s in centres], dtype=torch.float)
    assert torch.equal(torch.cat(head._points(cls)), points)
    _check_decode(head, points, centres, dist)

    targets = record_outputs(head, 'get_targets')
    losses = head.loss_by_feat(cls, dist, quality, gts, metas)
    labels = torch.cat(targets[0][0], 1)
    gt_boxes = torch.cat(targets[0][1], 1)
    pos = [(labels[b] < 10).nonzero().squeeze(1).tolist() for b in range(2)]
    n = sum(len(p) for p in pos)
    assert all(len(p) > 0 for p in pos)
    box, dfl, bce = torch.zeros(()), torch.zeros(()), 0.0
    for b in range(2):
        rows, q = _flat(dist, b), _flat(quality, b).squeeze(1)
        for i in pos[b]:
            cx, cy, s = centres[i]
            pred = naive_box(cx, cy, s, rows[i])
            _, giou = naive_iou_giou(pred, gt_boxes[b, i])
            box = box + 2.0 * (1 - giou)
            dfl = dfl + 0.25 * naive_dfl_sides(cx, cy, s, rows[i], gt_boxes[b, i])
            bce += float(F.binary_cross_entropy_with_logits(q[i], giou.detach().clamp(min=0)))
    torch.testing.assert_close(losses['loss_bbox'], box / n,
                               msg=lambda m: f'GIoU loss: {m}')
    div = float(dfl / losses['loss_dfl'])
    assert div == pytest.approx(4 * n, rel=1e-5), f'DFL divided by {div}, want 4 x {n} positives'
    torch.testing.assert_close(losses['loss_dfl'], dfl / (4 * n), msg=lambda m: f'DFL: {m}')
    assert float(losses['loss_iou']) == pytest.approx(bce / n, rel=1e-5), 'quality loss'
    _check_grad(losses['loss_bbox'] + losses['loss_dfl'], box / n + dfl / (4 * n), dist)
