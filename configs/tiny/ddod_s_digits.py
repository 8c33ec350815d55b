# Tiny DDOD (small) on digits-scenes (CPU, from scratch); the model:
# configs/_base_/models/tiny_ddod_s.py.
# LD for DDOD (student or teacher): --cfg-options model.bbox_head.box_dist=16
_base_ = ['../_base_/models/tiny_ddod_s.py', '../_base_/datasets/digits_scenes.py',
          '../_base_/tiny_runtime.py']
