# Tiny RetinaNet (small): mmdet's own RetinaHead on the atss_s backbone and neck (ResNet-18 at
# 1/4 width, FPN P3-P5 of 48 channels), 2 stacked convs of 48 channels. RetinaNet's 9 anchors
# per location (3 ratios x 3 scales) are kept, scaled as the other tiny anchors (octave base 2
# instead of COCO's 4: 16-80 px for objects of 8-70 px); focal loss and L1 on deltas as mmdet.
_base_ = './tiny_atss_s.py'
model = dict(
    type='RetinaNet',
    bbox_head=dict(
        _delete_=True,
        type='RetinaHead',
        num_classes=10,
        in_channels=48,
        stacked_convs=2,
        feat_channels=48,
        # GN as the other tiny heads (mmdet's RetinaHead has none; from scratch it helps)
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        anchor_generator=dict(
            type='AnchorGenerator',
            octave_base_scale=2,
            scales_per_octave=3,
            ratios=[0.5, 1.0, 2.0],
            strides=[8, 16, 32]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[.0, .0, .0, .0],
            target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(
        _delete_=True,
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                      ignore_iof_thr=-1),
        sampler=dict(type='PseudoSampler'),
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
