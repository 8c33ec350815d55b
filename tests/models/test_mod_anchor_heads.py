"""MOD on GFL/ATSS anchor heads: without RFA and with ATSS's assigner it is mmdet's GFLHead
(losses); the RFA sits where asked; with APS the head's targets are the APS assignment of its
own (independently decoded) predictions; APS's QFL score equals mmdet's QualityFocalLoss."""

import pytest
import torch
from mmdet.models.dense_heads import GFLHead
from mmdet.models.losses.gfocal_loss import quality_focal_loss
from mmdet.structures.bbox import bbox_overlaps
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from distill.models import APSAssigner, MODATSSHead, MODGFLHead
from distill.ops import PSDCNv2
from tests.models.test_atss_dist_head import KW as ATSS_KW
from tests.models.test_atss_dist_head import _inputs

GFL_KW = dict(num_classes=3, in_channels=8, feat_channels=8, stacked_convs=2,
              norm_cfg=dict(type='GN', num_groups=4, requires_grad=True),
              anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=2,
                                    scales_per_octave=1, strides=[8, 16]),
              loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0,
                            loss_weight=1.0),
              loss_dfl=dict(type='DistributionFocalLoss', loss_weight=0.25),
              reg_max=16, loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
              test_cfg=ConfigDict(nms_pre=100, min_bbox_size=0, score_thr=0.0,
                                  nms=dict(type='nms', iou_threshold=0.6), max_per_img=50))
APS = dict(type='APSAssigner', topk=3, num_levels=2, cls_loss='qfl', reg_weight=2.0)


def _train_cfg(assigner):
    return ConfigDict(assigner=assigner, allowed_border=-1, pos_weight=-1, debug=False)


def test_without_rfa_and_aps_it_is_mmdets_gfl():
    torch.manual_seed(0)
    ours = MODGFLHead(rfa=None, **GFL_KW, train_cfg=_train_cfg(dict(type='ATSSAssigner', topk=9)))
    ref = GFLHead(**GFL_KW, train_cfg=_train_cfg(dict(type='ATSSAssigner', topk=9)))
    ref.load_state_dict(ours.state_dict())
    feats, gts, metas = _inputs()
    a = ours.loss_by_feat(*ours(feats), gts, metas)
    b = ref.loss_by_feat(*ref(feats), gts, metas)
    for k in b:
        torch.testing.assert_close(torch.stack(a[k]), torch.stack(b[k]))


@pytest.mark.parametrize('rfa, where', [('first', 0), ('last', 1)])
@pytest.mark.parametrize('head_type', [MODGFLHead, MODATSSHead])
def test_rfa_replaces_the_asked_conv_of_both_towers(head_type, rfa, where):
    kw = dict(GFL_KW if head_type is MODGFLHead else dict(ATSS_KW, stacked_convs=2),
              train_cfg=_train_cfg(dict(type='ATSSAssigner', topk=9)))
    head = head_type(rfa=rfa, **kw)
    head.init_weights()
    for tower in (head.cls_convs, head.reg_convs):
        kinds = [type(m.conv) for m in tower]
        assert kinds[where] is PSDCNv2 and kinds[1 - where] is torch.nn.Conv2d, kinds
        assert not tower[where].conv.conv_offset.weight.any()  # starts as the plain conv
    with pytest.raises(ValueError, match='rfa must be one of'):
        head_type(rfa='middle', **kw)


def _gfl_boxes(anchors, pred, stride):
    """GFL's decoding written out: centre -+ the distribution's expectation x stride."""
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    d = (pred.view(-1, 4, 17).softmax(-1) * torch.arange(17.)).sum(-1) * stride
    return torch.cat([centres - d[:, :2], centres + d[:, 2:]], 1)


@pytest.mark.parametrize('seed', range(3))
def test_aps_targets_are_the_assignment_of_the_heads_own_predictions(seed):
    torch.manual_seed(seed)
    head = MODGFLHead(rfa='first', **GFL_KW, train_cfg=_train_cfg(APS))
    head.init_weights()
    feats, gts, metas = _inputs()
    feats = [f + 0.1 * seed for f in feats]
    cls_scores, bbox_preds = head(feats)
    seen = []
    original = head.loss_by_feat_single

    def spy(anchors, cls_score, bbox_pred, labels, *args, **kwargs):
        seen.append(labels)
        return original(anchors, cls_score, bbox_pred, labels, *args, **kwargs)

    head.loss_by_feat_single = spy
    losses = head.loss_by_feat(cls_scores, bbox_preds, gts, metas)
    assert all(torch.isfinite(torch.stack(v)).all() for v in losses.values())
    got = torch.cat(seen, 1)  # [B, N]: labels, num_classes for a negative
    anchors = head.prior_generator.grid_priors([f.shape[-2:] for f in feats], device='cpu')
    sizes = [len(a) for a in anchors]
    assigner = APSAssigner(**{k: v for k, v in APS.items() if k != 'type'})
    for i in range(2):
        logits = torch.cat([c[i].permute(1, 2, 0).reshape(-1, 3) for c in cls_scores])
        boxes = torch.cat([_gfl_boxes(a, b[i].permute(1, 2, 0).reshape(len(a), -1), s)
                           for a, b, s in zip(anchors, bbox_preds, (8, 16))])
        centres = torch.cat([(a[:, :2] + a[:, 2:]) / 2 for a in anchors])
        result = assigner.assign(InstanceData(priors=centres, scores=logits.detach(),
                                              bboxes=boxes.detach()), sizes, gts[i])
        want = torch.where(result.labels >= 0, result.labels, 3)
        assert (want < 3).any()
        torch.testing.assert_close(got[i], want)


def test_aps_qfl_score_is_mmdets_quality_focal_loss():
    g = torch.Generator().manual_seed(0)
    b, n, c, k = 2, 30, 5, 4
    logits = torch.randn(b, n, c, generator=g) * 2
    xy = torch.rand(b, n, 2, generator=g) * 40
    boxes = torch.cat([xy, xy + 5 + torch.rand(b, n, 2, generator=g) * 30], -1)
    gxy = torch.rand(b, k, 2, generator=g) * 40
    gts = torch.cat([gxy, gxy + 5 + torch.rand(b, k, 2, generator=g) * 30], -1)
    labels = torch.randint(0, c, (b, k), generator=g)
    assigner = APSAssigner(cls_loss='qfl', cls_weight=1.5, reg_weight=2.0)
    l_cls, l_reg = assigner.losses(logits, boxes, gts, labels)  # [B, G, N]
    for i in range(b):
        for j in range(k):
            iou = bbox_overlaps(boxes[i], gts[i, j].expand(n, 4), is_aligned=True)
            want = quality_focal_loss(logits[i], (labels[i, j].expand(n), iou), beta=2.0,
                                      reduction='none')
            torch.testing.assert_close(l_cls[i, j], 1.5 * want, rtol=1e-5, atol=1e-6)
    # the pair path (what the batched assignment computes) gives the same values
    pairs = tuple(t.reshape(-1) for t in torch.meshgrid(
        torch.arange(b), torch.arange(k), torch.arange(n), indexing='ij'))
    p_cls, p_reg = assigner.pair_losses(logits, boxes, gts, labels, pairs)
    torch.testing.assert_close(p_cls.view(b, k, n), l_cls)
    torch.testing.assert_close(p_reg.view(b, k, n), l_reg)
    with pytest.raises(ValueError, match="cls_loss must be 'focal' or 'qfl'"):
        APSAssigner(cls_loss='ce')


def test_atss_head_with_aps_focal_trains_every_parameter():
    torch.manual_seed(0)
    head = MODATSSHead(rfa='first', box_dist=16, **dict(
        ATSS_KW, stacked_convs=2, train_cfg=_train_cfg(dict(APS, cls_loss='focal'))))
    head.init_weights()
    feats, gts, metas = _inputs()
    losses = head.loss_by_feat(*head(feats), gts, metas)
    total = sum(sum(v) if isinstance(v, list) else v for v in losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for p in head.parameters())


def test_aps_on_several_anchors_per_location_is_refused():
    kw = dict(ATSS_KW, train_cfg=_train_cfg(dict(APS, cls_loss='focal')))
    kw['anchor_generator'] = dict(kw['anchor_generator'], ratios=[0.5, 1.0])
    with pytest.raises(ValueError, match='MODATSSHead with APSAssigner needs one anchor per '
                                         'location, got 2'):
        MODATSSHead(rfa=None, **kw)
