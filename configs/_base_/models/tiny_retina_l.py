# Tiny RetinaNet (large): the teacher of the RetinaNet pair. tiny_retina_s.py on the gfl_l
# backbone and neck (ResNet-50 at 1/4 width, FPN P3-P5 of 96 channels), 4 stacked convs of 96
# channels; anchors, assigner, losses and test settings inherited from tiny_retina_s.py, so
# that student and teacher have the same 9 anchors per location (CrossKD and KD need them).
_base_ = './tiny_retina_s.py'
model = dict(
    backbone=dict(depth=50),
    neck=dict(in_channels=[128, 256, 512], out_channels=96),
    bbox_head=dict(in_channels=96, stacked_convs=4, feat_channels=96,
                   norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)))
