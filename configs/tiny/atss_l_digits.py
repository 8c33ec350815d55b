# Tiny ATSS teacher (large) on digits-scenes (CPU, from scratch).
_base_ = ['../_base_/models/tiny_atss_l.py', '../_base_/datasets/digits_scenes.py',
          '../_base_/tiny_runtime.py']
