# Tiny FCOS (small) with mmdet's own FCOSHead on digits-scenes (CPU, from scratch); the model:
# configs/_base_/models/tiny_fcos_mmdet_s.py. (fcos_s_digits.py is MOD's baseline, MODHead.)
_base_ = ['../_base_/models/tiny_fcos_mmdet_s.py', '../_base_/datasets/digits_scenes.py',
          '../_base_/tiny_runtime.py']
