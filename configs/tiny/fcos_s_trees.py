# Tiny FCOS (small) on trees, MOD's baseline (CPU, from scratch); the model:
# configs/_base_/models/tiny_fcos_s.py. + RFA: --cfg-options model.bbox_head.rfa=first
_base_ = ['../_base_/models/tiny_fcos_s.py', '../_base_/datasets/trees.py',
          '../_base_/tiny_runtime.py']
model = dict(bbox_head=dict(num_classes=1))
