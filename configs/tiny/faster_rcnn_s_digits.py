# Tiny Faster R-CNN (small) on digits-scenes (CPU, from scratch): a two-stage student or
# teacher for the feature recipes (pkd, cwd, mgd, fgd).
_base_ = ['../_base_/models/tiny_faster_rcnn_s.py', '../_base_/datasets/digits_scenes.py',
          '../_base_/tiny_runtime.py']
