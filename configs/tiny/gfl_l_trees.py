# Tiny GFL teacher (large) on trees (CPU, from scratch).
_base_ = ['../_base_/models/tiny_gfl_l.py', '../_base_/datasets/trees.py',
          '../_base_/tiny_runtime.py']
model = dict(bbox_head=dict(num_classes=1))
