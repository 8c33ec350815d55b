# Tiny FCOS with mmdet's own FCOSHead (not our MODHead of tiny_fcos_s.py): the atss_s backbone,
# neck and towers (2 convs of 48 channels, GN), FCOS's ranges scaled as the tiny anchors,
# centre sampling, distances in strides (norm_on_bbox), centerness on the box branch, GIoU.
_base_ = './tiny_atss_s.py'
model = dict(
    type='FCOS',
    bbox_head=dict(
        _delete_=True,
        type='FCOSHead',
        num_classes=10,
        in_channels=48,
        stacked_convs=2,
        feat_channels=48,
        strides=[8, 16, 32],
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        # 2 x stride instead of COCO's 8 x: objects here are 8-70 px
        regress_ranges=((-1, 16), (16, 32), (32, 1e8)),
        center_sampling=True,
        center_sample_radius=1.5,
        norm_on_bbox=True,
        centerness_on_reg=True,
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    train_cfg=dict(_delete_=True, allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
