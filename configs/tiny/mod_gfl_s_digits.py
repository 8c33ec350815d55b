# Tiny MOD on GFL (small) on digits-scenes: the GFL student of configs/_base_/models/tiny_gfl_s.py
# with MOD's two parts (Hao et al., PRL 2022) on its anchor head: the Receptive Field Adaptor (a
# modulated DCNv2 as the first conv of each tower) and the Aligned Points Sampler in place of
# ATSS's assignment, scoring each location by GFL's own losses (QFL 1, GIoU 2).
# RFA alone: --cfg-options model.train_cfg.assigner.type=ATSSAssigner (and drop the APS keys);
# APS alone: --cfg-options model.bbox_head.rfa=None
_base_ = ['../_base_/models/tiny_gfl_s.py', '../_base_/datasets/digits_scenes.py',
          '../_base_/tiny_runtime.py']
model = dict(
    bbox_head=dict(type='MODGFLHead', rfa='first'),
    train_cfg=dict(assigner=dict(_delete_=True, type='APSAssigner', topk=9, num_levels=2,
                                 cls_loss='qfl', cls_weight=1.0, reg_weight=2.0, gamma=2.0)))
