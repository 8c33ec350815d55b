# CWD (Shu et al., ICCV 2021): channel-wise distillation of every FPN level. Each channel is a
# distribution over the positions (softmax at tau); the student's learns the teacher's with
# KL * tau^2, averaged over the channels and images, summed over the levels; equal to mmrazor
# 1.0's ChannelWiseDivergence on each FPN output. tau = 1 and loss weight 10 (per level) are
# mmrazor 1.0's detection config (cwd_fpn_retina_r101_retina_r50_1x_coco.py, which its GFL
# config inherits), not values read from the paper. Where the student's FPN is narrower than
# the teacher's, the graph's 1x1 adapter (trained, not exported) maps it first.
# docs/feature_methods.md.
edges = [
    dict(name='cwd',
         loss=dict(type='CWDFeatureLoss', tau=1.0, loss_weight=10.0),
         student=dict(output='neck'), teacher=dict(output='neck'),
         region=dict(type='AllRegion')),
]
