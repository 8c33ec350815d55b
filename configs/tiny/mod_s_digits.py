# Tiny MOD (small) on digits-scenes (Hao et al., PRL 2022): the FCOS of
# configs/_base_/models/tiny_fcos_s.py
# with the Receptive Field Adaptor (a modulated DCNv2 as the first conv of each tower, the
# paper's position; rfa='last' is the published code's) and the Aligned Points Sampler.
# APS alone: --cfg-options model.bbox_head.rfa=None
_base_ = ['../_base_/models/tiny_fcos_s.py', '../_base_/datasets/digits_scenes.py',
          '../_base_/tiny_runtime.py']
model = dict(
    bbox_head=dict(rfa='first'),
    # APS (Sec. 3.2): K = 9 candidates per level, the 2 levels of lowest mean loss, a GMM on S;
    # the losses scored as the head weighs them (focal 1, GIoU 2)
    train_cfg=dict(assigner=dict(type='APSAssigner', topk=9, num_levels=2, cls_weight=1.0,
                                 reg_weight=2.0, gamma=2.0, alpha=0.25)))
