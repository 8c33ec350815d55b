# Tiny FCOS (small) on digits-scenes, MOD's baseline (CPU, from scratch); the model:
# configs/_base_/models/tiny_fcos_s.py. + RFA: --cfg-options model.bbox_head.rfa=first
_base_ = ['../_base_/models/tiny_fcos_s.py', '../_base_/datasets/digits_scenes.py',
          '../_base_/tiny_runtime.py']
