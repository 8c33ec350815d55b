# Tiny RetinaNet teacher (large, mmdet's RetinaHead, 9 anchors per location) on digits-scenes
# (CPU, from scratch); the model: configs/_base_/models/tiny_retina_l.py. Its student:
# configs/tiny/retina_s_digits.py (same anchors).
_base_ = ['../_base_/models/tiny_retina_l.py', '../_base_/datasets/digits_scenes.py',
          '../_base_/tiny_runtime.py']
