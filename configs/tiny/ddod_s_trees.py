# Tiny DDOD (small) on trees (CPU, from scratch); the model:
# configs/_base_/models/tiny_ddod_s.py.
# LD for DDOD (student or teacher): --cfg-options model.bbox_head.box_dist=16
_base_ = ['../_base_/models/tiny_ddod_s.py', '../_base_/datasets/trees.py',
          '../_base_/tiny_runtime.py']
model = dict(bbox_head=dict(num_classes=1))
