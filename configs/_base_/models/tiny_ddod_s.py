# Tiny DDOD (small): the atss_s backbone, neck and towers with DDOD's head (paper: Chen et al.,
# ACM MM 2021): a deformable first conv in both towers, an IoU branch, separate classification
# (alpha 0.8) and regression (alpha 0.5) cost assignments, and the FPN level weights of Eq. 3-5
# from two counters saved in checkpoints.
_base_ = './tiny_atss_s.py'
model = dict(
    type='DDOD',
    bbox_head=dict(
        _delete_=True,
        type='DDODPaperHead',
        num_classes=10,
        in_channels=48,
        stacked_convs=2,
        feat_channels=48,
        use_dcn=True,
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        # box_dist=16: GFL's general distribution instead of deltas, so LD applies
        box_dist=None,
        anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=2,
                              scales_per_octave=1, strides=[8, 16, 32]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                        target_stds=[0.1, 0.1, 0.2, 0.2]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        loss_iou=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    train_cfg=dict(
        _delete_=True,
        # candidates='cost': the paper's top-k by cost inside the GT ('distance': ATSS's, as
        # the published code and mmdet)
        assigner=dict(type='DDODAssigner', alpha=0.8, topk=9, candidates='cost'),
        reg_assigner=dict(type='DDODAssigner', alpha=0.5, topk=9, candidates='cost'),
        allowed_border=-1,
        pos_weight=-1,
        debug=False))
