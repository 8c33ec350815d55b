# Tiny FCOS (small): the atss_s backbone, neck and towers with an FCOS head in MOD's baseline
# form (paper Table 2, row "FCOS"): FCOS's ranges and centre sampling, GIoU loss, and a quality
# branch trained on the GIoU of the predicted box instead of centerness (quality='centerness':
# row "FCOS*"). The MOD configs add the RFA (rfa='first') and the APS assigner.
_base_ = './tiny_atss_s.py'
model = dict(
    type='FCOS',
    bbox_head=dict(
        _delete_=True,
        type='MODHead',
        num_classes=10,
        in_channels=48,
        stacked_convs=2,
        feat_channels=48,
        strides=[8, 16, 32],
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        rfa=None,
        rfa_conv='PSDCNv2',
        quality='giou',
        # box_dist=16: GFL's general distribution instead of the 4 distances, so LD applies
        box_dist=None,
        # FCOS's ranges scaled as the tiny anchors (2 x stride instead of COCO's 8 x): objects
        # here are 8-70 px
        regress_ranges=((-1, 16), (16, 32), (32, 1e8)),
        center_sampling=True,
        center_sample_radius=1.5,
        norm_on_bbox=True,
        centerness_on_reg=True,
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    train_cfg=dict(_delete_=True, allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.6), max_per_img=100))
