# Tiny SALT-Net (small, student) on digits-scenes: the gfl_s backbone, neck and towers
# with SALT's head (two regression stages, N = 9 task-aware points per task). Loss weights as
# the paper's Eq. 10: QFL 1, GIoU stage 1 1, GIoU stage 2 2, DFL 0.5 (published code: 0.25).
_base_ = ['../_base_/models/tiny_gfl_s.py', '../_base_/datasets/digits_scenes.py',
          '../_base_/tiny_runtime.py']
model = dict(
    type='SALTNet',
    bbox_head=dict(
        type='SALTHead', num_points=9, cls_points='exp', skip=True,
        loss_dfl=dict(type='DistributionFocalLoss', loss_weight=0.5),
        loss_bbox_stage1=dict(type='GIoULoss', loss_weight=1.0)),
    # box_stage: 2 = refined boxes (default), 1 = coarse boxes; both ranked by the refined scores
    test_cfg=dict(box_stage=2))
