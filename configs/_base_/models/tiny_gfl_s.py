# Tiny GFL (small): student of the CPU configs. Head as mmdet's GFL (QFL + DFL + GIoU,
# reg_max 16), narrower and shallower.
model = dict(
    type='GFL',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    # ResNet-18 at 16/64 of the standard width, trained from scratch (nothing can be
    # downloaded here): BN statistics are learned, no stage is frozen.
    backbone=dict(
        type='ResNet',
        depth=18,
        base_channels=16,
        num_stages=4,
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=None),
    # P3-P5 (strides 8-32): the objects are 8-70 px; COCO's P6/P7 would never get a positive.
    neck=dict(
        type='FPN',
        in_channels=[32, 64, 128],
        out_channels=48,
        start_level=0,
        add_extra_convs='on_output',
        num_outs=3),
    bbox_head=dict(
        type='GFLHead',
        num_classes=10,
        in_channels=48,
        stacked_convs=2,
        feat_channels=48,
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        # octave_base_scale=2: anchors of 16, 32 and 64 px, the range of the objects (COCO's
        # 8 x stride is for objects up to 800 px); every level gets ATSS positives.
        anchor_generator=dict(
            type='AnchorGenerator',
            ratios=[1.0],
            octave_base_scale=2,
            scales_per_octave=1,
            strides=[8, 16, 32]),
        loss_cls=dict(
            type='QualityFocalLoss',
            use_sigmoid=True,
            beta=2.0,
            loss_weight=1.0),
        loss_dfl=dict(type='DistributionFocalLoss', loss_weight=0.25),
        reg_max=16,
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0)),
    train_cfg=dict(
        assigner=dict(type='ATSSAssigner', topk=9),
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(
        nms_pre=1000,
        min_bbox_size=0,
        score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.6),
        max_per_img=100))
