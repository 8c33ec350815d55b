"""MOD's head: in FCOS mode (no RFA, centerness, FCOS's assignment) it is mmdet's FCOSHead,
losses and predictions; the RFA's deformable conv sits where asked and starts as the conv it
replaces; the GIoU quality target of the paper."""

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.dense_heads import FCOSHead
from mmdet.structures.bbox import bbox_overlaps
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from distill.models import MODHead
from distill.ops import PSDCNv2

KW = dict(num_classes=4, in_channels=8, feat_channels=8, stacked_convs=2, strides=[8, 16],
          regress_ranges=((-1, 16), (16, 1e8)), center_sampling=True, norm_on_bbox=True,
          centerness_on_reg=True, norm_cfg=dict(type='GN', num_groups=4, requires_grad=True),
          loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
          test_cfg=ConfigDict(nms_pre=100, min_bbox_size=0, score_thr=0.0,
                              nms=dict(type='nms', iou_threshold=0.6), max_per_img=50))


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(2, 8, 8, 8, generator=g), torch.randn(2, 8, 4, 4, generator=g)]
    gts = [InstanceData(bboxes=torch.tensor([[4., 6, 30, 40], [30, 20, 60, 62]]),
                        labels=torch.tensor([1, 3])),
           InstanceData(bboxes=torch.tensor([[10., 10, 22, 20]]), labels=torch.tensor([0]))]
    metas = [dict(img_shape=(64, 64), pad_shape=(64, 64), scale_factor=(1.0, 1.0))] * 2
    return feats, gts, metas


def _pair():
    torch.manual_seed(0)
    ours = MODHead(rfa=None, quality='centerness', **KW)
    ours.init_weights()
    ref = FCOSHead(**KW)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def test_fcos_mode_has_mmdets_fcos_losses():
    ours, ref = _pair()
    feats, gts, metas = _inputs()
    a = ours.loss_by_feat(*ours(feats), gts, metas)
    b = ref.loss_by_feat(*ref(feats), gts, metas)
    assert a.keys() == b.keys() == {'loss_cls', 'loss_bbox', 'loss_centerness'}
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    assert a['loss_bbox'] > 0


def test_fcos_mode_has_mmdets_fcos_predictions():
    ours, ref = _pair()
    ours.eval(), ref.eval()
    feats, _, metas = _inputs(1)
    a = ours.predict_by_feat(*ours(feats), batch_img_metas=metas, rescale=False)
    b = ref.predict_by_feat(*ref(feats), batch_img_metas=metas, rescale=False)
    for x, y in zip(a, b):
        assert len(x) > 0
        torch.testing.assert_close(x.bboxes, y.bboxes)
        torch.testing.assert_close(x.scores, y.scores)
        assert (x.labels == y.labels).all()


@pytest.mark.parametrize('rfa,where', [('first', 0), ('last', 1), (None, None)])
def test_rfa_replaces_the_asked_conv_of_both_towers(rfa, where):
    head = MODHead(rfa=rfa, **KW)
    head.init_weights()
    for tower in (head.cls_convs, head.reg_convs):
        kinds = [type(m.conv).__name__ for m in tower]
        want = ['Conv2d'] * 2
        if where is not None:
            want[where] = 'PSDCNv2'
        assert kinds == want
    if where is not None:
        conv = head.cls_convs[where].conv
        assert isinstance(conv, PSDCNv2)
        # zero offsets and mask logits: it starts as the plain conv with every tap weighted by
        # the modulation sigmoid(0) = 1/2
        assert conv.conv_offset.weight.abs().sum() == 0
        x = torch.randn(1, 8, 6, 6)
        want = 0.5 * F.conv2d(x, conv.weight, None, padding=1)
        if conv.bias is not None:
            want = want + conv.bias[:, None, None]
        torch.testing.assert_close(conv(x), want, rtol=1e-4, atol=1e-5)


def test_giou_quality_target_is_the_clamped_giou_of_the_predicted_box():
    torch.manual_seed(0)
    head = MODHead(rfa=None, quality='giou', **KW)
    head.init_weights()
    feats, gts, metas = _inputs()
    outs = head(feats)
    losses = head.loss_by_feat(*outs, gts, metas)
    assert set(losses) == {'loss_cls', 'loss_bbox', 'loss_iou'}
    points = head._points(outs[0])
    labels, boxes = head.get_targets(points, *outs[:2], gts)
    labels = torch.cat(labels, 1).reshape(-1)
    pos = (labels < 4).nonzero().squeeze(1)
    flat_points = torch.cat(points)[None].expand(2, -1, -1).reshape(-1, 4)
    pred = torch.cat([o.permute(0, 2, 3, 1).reshape(2, -1, 4) for o in outs[1]], 1).reshape(-1, 4)
    quality = torch.cat([o.permute(0, 2, 3, 1).reshape(2, -1) for o in outs[2]], 1).reshape(-1)
    xy, s = flat_points[pos, :2], flat_points[pos, 2:3]
    decoded = torch.cat([xy - pred[pos, :2] * s, xy + pred[pos, 2:] * s], -1)
    gt = torch.cat(boxes, 1).reshape(-1, 4)[pos]
    target = bbox_overlaps(decoded, gt, mode='giou', is_aligned=True).clamp(min=0)
    want = F.binary_cross_entropy_with_logits(quality[pos], target, reduction='sum') / len(pos)
    torch.testing.assert_close(losses['loss_iou'], want)
    # the box loss is the unweighted mean GIoU loss over the positives (weight 2)
    want_bbox = 2 * (1 - bbox_overlaps(decoded, gt, mode='giou', is_aligned=True)).mean()
    torch.testing.assert_close(losses['loss_bbox'], want_bbox)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="rfa must be one of"):
        MODHead(rfa='middle', **KW)
    with pytest.raises(ValueError, match="quality must be one of"):
        MODHead(quality='iou', **KW)
    with pytest.raises(ValueError, match='norm_on_bbox=False'):
        MODHead(**dict(KW, norm_on_bbox=False))
