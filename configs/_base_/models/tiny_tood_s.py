# Tiny TOOD (small): mmdet's TOODHead on the atss_s backbone and neck; 2 interactive convs of 48
# channels (COCO: 6 of 256), GN, anchor-free boxes. The first initial_epoch epochs use ATSS's
# assignment and focal loss, then the task-aligned assigner and QFL (mmdet's TOOD 1x: 4 of 12).
_base_ = './tiny_atss_s.py'
model = dict(
    type='TOOD',
    bbox_head=dict(
        _delete_=True,
        type='TOODHead',
        num_classes=10,
        in_channels=48,
        stacked_convs=2,
        feat_channels=48,
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        anchor_type='anchor_free',
        anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=2,
                              scales_per_octave=1, strides=[8, 16, 32]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                        target_stds=[0.1, 0.1, 0.2, 0.2]),
        initial_loss_cls=dict(type='FocalLoss', use_sigmoid=True, activated=True, gamma=2.0,
                              alpha=0.25, loss_weight=1.0),
        loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, activated=True, beta=2.0,
                      loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0)),
    train_cfg=dict(
        _delete_=True,
        initial_epoch=4,
        initial_assigner=dict(type='ATSSAssigner', topk=9),
        assigner=dict(type='TaskAlignedAssigner', topk=13),
        alpha=1,
        beta=6,
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.6), max_per_img=100))
