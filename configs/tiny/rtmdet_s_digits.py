# Tiny RTMDet (small: CSPNeXt + CSPNeXtPAFPN + RTMDetSepBNHead) on digits-scenes (CPU, from
# scratch); the model: configs/_base_/models/tiny_rtmdet_s.py.
_base_ = ['../_base_/models/tiny_rtmdet_s.py', '../_base_/datasets/digits_scenes.py',
          '../_base_/tiny_runtime.py']
# RTMDetSepBNHead shares its convs over the levels (share_conv): each parameter once in the
# optimizer's groups (mmdet's RTMDet configs do the same)
optim_wrapper = dict(paramwise_cfg=dict(bypass_duplicate=True))
