"""ATSSDistHead: without the option it is mmdet's ATSSHead (losses and predictions); with
``box_dist`` its DFL is GFL's on the positives, weighted and normalised as ATSS's box loss."""

import torch
from mmdet.models.dense_heads import ATSSHead
from mmdet.models.losses import DistributionFocalLoss
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from distill.models import ATSSDistHead
from tests.helpers import record_outputs

KW = dict(num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
          norm_cfg=dict(type='GN', num_groups=4, requires_grad=True),
          anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=2,
                                scales_per_octave=1, strides=[8, 16]),
          bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                          target_stds=[0.1, 0.1, 0.2, 0.2]),
          loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
          train_cfg=ConfigDict(assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1,
                               pos_weight=-1, debug=False),
          test_cfg=ConfigDict(nms_pre=100, min_bbox_size=0, score_thr=0.0,
                              nms=dict(type='nms', iou_threshold=0.6), max_per_img=50))


def _inputs():
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, 8, 8, 8, generator=g), torch.randn(2, 8, 4, 4, generator=g)]
    gts = [InstanceData(bboxes=torch.tensor([[4., 6, 30, 40], [30, 20, 60, 62]]),
                        labels=torch.tensor([1, 2])),
           InstanceData(bboxes=torch.tensor([[10., 10, 26, 24]]), labels=torch.tensor([0]))]
    metas = [dict(img_shape=(64, 64), pad_shape=(64, 64), scale_factor=(1.0, 1.0))] * 2
    return feats, gts, metas


def test_without_the_option_it_is_mmdets_atss():
    torch.manual_seed(0)
    ours = ATSSDistHead(**KW)
    ours.init_weights()
    ref = ATSSHead(**KW)
    ref.load_state_dict(ours.state_dict())
    feats, gts, metas = _inputs()
    a = ours.loss_by_feat(*ours(feats), gts, metas)
    b = ref.loss_by_feat(*ref(feats), gts, metas)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(torch.stack(a[k]), torch.stack(b[k]), msg=k)
    ours.eval(), ref.eval()
    p = ours.predict_by_feat(*ours(feats), batch_img_metas=metas)
    q = ref.predict_by_feat(*ref(feats), batch_img_metas=metas)
    torch.testing.assert_close(p[0].bboxes, q[0].bboxes)


def test_box_dist_dfl_is_gfls_weighted_like_atss_box_loss():
    torch.manual_seed(0)
    head = ATSSDistHead(box_dist=16, **KW)
    head.init_weights()
    assert head.atss_reg.out_channels == 68
    feats, gts, metas = _inputs()
    outs = head(feats)
    calls = record_outputs(head, 'get_targets')
    losses = head.loss_by_feat(*outs, gts, metas)
    anchors, labels, _, targets = (calls[-1][i] for i in range(4))
    dfl = DistributionFocalLoss(loss_weight=0.25)
    raw, weights = [], 0.0
    for lv, s in enumerate((8, 16)):
        lab = labels[lv].reshape(-1)
        pos = (lab < 3).nonzero().squeeze(1)
        anc = anchors[lv].reshape(-1, 4)[pos]
        gt = targets[lv].reshape(-1, 4)[pos]
        dist = outs[1][lv].permute(0, 2, 3, 1).reshape(-1, 68)[pos]
        w = head.centerness_target(anc, gt)
        total = dist.new_zeros(())
        for i in range(len(pos)):  # a naive loop over positives and sides
            cx, cy = (anc[i, 0] + anc[i, 2]) / 2, (anc[i, 1] + anc[i, 3]) / 2
            sides = [cx - gt[i, 0], cy - gt[i, 1], gt[i, 2] - cx, gt[i, 3] - cy]
            for k, d in enumerate(sides):
                t = (d / s).clamp(0, 16 - 0.01)
                total = total + w[i] * dfl(dist[i, 17 * k:17 * (k + 1)][None], t[None],
                                           reduction_override='sum')
        raw.append(total / 4)
        weights += float(w.sum())
    want = [r / max(weights, 1.0) for r in raw]
    torch.testing.assert_close(torch.stack(losses['loss_dfl']), torch.stack(want))
    assert all(x > 0 for x in losses['loss_dfl'])
