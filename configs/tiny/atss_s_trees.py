# Tiny ATSS student (small) on trees (CPU, from scratch).
_base_ = ['../_base_/models/tiny_atss_s.py', '../_base_/datasets/trees.py',
          '../_base_/tiny_runtime.py']
model = dict(bbox_head=dict(num_classes=1))
