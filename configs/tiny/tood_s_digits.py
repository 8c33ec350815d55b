# Tiny TOOD (small, mmdet's TOODHead) on digits-scenes (CPU, from scratch); the model:
# configs/_base_/models/tiny_tood_s.py.
_base_ = ['../_base_/models/tiny_tood_s.py', '../_base_/datasets/digits_scenes.py',
          '../_base_/tiny_runtime.py']
