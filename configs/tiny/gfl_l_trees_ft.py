# Tiny GFL teacher (large) on trees, its backbone initialised from the same model trained on
# digits-scenes (checkpoints/gfl_l_digits_e24_seed0.pth, shipped; see MANIFEST.json). trees has 94
# training tiles: from random weights both models stay at the floor (about 2 AP,
# docs/results_trees.md).
_base_ = ['../_base_/models/tiny_gfl_l.py', '../_base_/datasets/trees.py',
          '../_base_/tiny_runtime.py']
model = dict(
    backbone=dict(init_cfg=dict(
        _delete_=True, type='Pretrained', prefix='backbone.',
        # {{fileDirname}}: found from any working directory and in an installed package.
        checkpoint='{{fileDirname}}/../../checkpoints/gfl_l_digits_e24_seed0.pth')),
    bbox_head=dict(num_classes=1))
