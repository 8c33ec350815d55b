"""SALT-Net's box-loss normaliser where its clamp at 1 does not apply: with confident class
scores the positives' summed max scores (GFL's weights) are well above 1, and every box loss
(stage-2 GIoU, DFL, stage-1 GIoU) is its score-weighted sum over the positives divided by that
sum, recomputed here positive by positive. (test_salt_head.py covers the clamped case of an
untrained head, whose scores sum to less than 1.)"""

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.structures import InstanceData

import distill.models  # noqa: F401 (registers the head)
from tests.helpers import record_outputs
from tests.models.test_box_dist16_losses import naive_box, naive_dfl_sides, naive_iou_giou

SALT_S = 'configs/tiny/salt_s_digits.py'
STRIDES = (8, 16, 32)
IMG = 128


def _inputs(seed):
    """Seeded head outputs for 2 images: class logits around +3 (max scores ~0.95-1), stage-2
    distributions (17 bins per side), stage-1 distances in strides; GTs of 2 and 3 boxes."""
    g = torch.Generator().manual_seed(seed)
    sizes = [IMG // s for s in STRIDES]
    cls = [torch.randn(2, 10, n, n, generator=g) + 3 for n in sizes]
    tilt = (-0.4 * torch.arange(17.0)).repeat(4)[None, :, None, None]
    dist = [torch.randn(2, 68, n, n, generator=g) * 1.5 + tilt for n in sizes]
    ltrb = [torch.rand(2, 4, n, n, generator=g) * 3 for n in sizes]
    gts = [InstanceData(bboxes=torch.tensor([[6., 10, 50, 44], [40, 30, 118, 122]]),
                        labels=torch.tensor([1, 7])),
           InstanceData(bboxes=torch.tensor([[20., 64, 60, 100], [3, 2, 125, 90],
                                             [70, 8, 90, 30]]),
                        labels=torch.tensor([0, 9, 4]))]
    metas = [dict(img_shape=(IMG, IMG), pad_shape=(IMG, IMG), batch_input_shape=(IMG, IMG),
                  scale_factor=(1.0, 1.0))] * 2
    return cls, dist, ltrb, gts, metas


@pytest.mark.parametrize('seed', range(2))
def test_box_losses_divide_by_the_unclamped_sum_of_the_positives_scores(seed):
    """Per level: ``loss_bbox = 2 sum_i w_i (1 - GIoU_i) / W``, ``loss_dfl = 0.5 sum_i w_i
    sum_sides DFL_i / 4 / W`` (targets clamped at 16 - 0.1, mmdet's GFL) and ``loss_bbox_stage1
    = sum_i w_i (1 - GIoU(stage-1 box_i)) / W``, with ``w_i`` the positive's max class score
    and ``W = sum_i w_i`` over all levels and images, here > 10 (the clamp max(W, 1) is
    inactive); GFL's anchors are centred on ``(j s, i s)``."""
    cfg = Config.fromfile(SALT_S)
    head = cfg.model.bbox_head
    head.update(train_cfg=cfg.model.train_cfg, test_cfg=cfg.model.test_cfg)
    torch.manual_seed(0)
    head = MODELS.build(head)
    cls, dist, ltrb, gts, metas = _inputs(seed)
    targets = record_outputs(head, 'get_targets')
    losses = head.loss_by_feat(cls, dist, ltrb, gts, metas)
    labels = torch.cat(targets[0][1], 1)  # [B, N]
    gt_boxes = torch.cat(targets[0][3], 1)

    box, dfl, stage1, weights = [0.0] * 3, [0.0] * 3, [0.0] * 3, 0.0
    start = 0
    for lv, s in enumerate(STRIDES):
        n = IMG // s
        for b in range(2):
            for i in range(n):
                for j in range(n):
                    label = int(labels[b, start + i * n + j])
                    if label >= 10:
                        continue
                    gt = gt_boxes[b, start + i * n + j]
                    cx, cy = j * s, i * s
                    w = float(cls[lv][b, :, i, j].sigmoid().max())
                    weights += w
                    _, giou = naive_iou_giou(naive_box(cx, cy, s, dist[lv][b, :, i, j]), gt)
                    box[lv] += w * 2.0 * float(1 - giou)
                    dfl[lv] += w * 0.5 / 4 * float(naive_dfl_sides(
                        cx, cy, s, dist[lv][b, :, i, j], gt, eps=0.1))
                    l_, t_, r_, b_ = (ltrb[lv][b, :, i, j] * s).tolist()
                    coarse = torch.tensor([cx - l_, cy - t_, cx + r_, cy + b_])
                    stage1[lv] += w * float(1 - naive_iou_giou(coarse, gt)[1])
        start += n * n
    assert weights > 10, f'the scores sum to {weights}: the clamp at 1 would not be tested'
    assert all(v > 0 for v in box), 'every level should have positives'
    # the normaliser the head divided by, read back from each loss and its naive sum
    for name, raw in (('loss_bbox', box), ('loss_dfl', dfl), ('loss_bbox_stage1', stage1)):
        for lv in range(3):
            got = float(losses[name][lv])
            assert raw[lv] / got == pytest.approx(weights, rel=1e-4), \
                f'{name} level {lv}: divided by {raw[lv] / got}, want sum of scores {weights}'
            assert got == pytest.approx(raw[lv] / weights, rel=1e-4), name
