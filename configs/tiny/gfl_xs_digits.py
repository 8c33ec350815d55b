# Tiny GFL student (extra small) on digits-scenes: a larger capacity gap to the gfl_l teacher
# than gfl_s (issue 8, setting b). ResNet-18 at 8/64 of the standard width, a 32-channel FPN and
# one head conv per branch; everything else (schedule, GFL losses, priors) as gfl_s.
_base_ = ['../_base_/models/tiny_gfl_s.py', '../_base_/datasets/digits_scenes.py',
          '../_base_/tiny_runtime.py']
model = dict(
    backbone=dict(base_channels=8),
    neck=dict(in_channels=[16, 32, 64], out_channels=32),
    bbox_head=dict(in_channels=32, feat_channels=32, stacked_convs=1,
                   norm_cfg=dict(type='GN', num_groups=16, requires_grad=True)))
