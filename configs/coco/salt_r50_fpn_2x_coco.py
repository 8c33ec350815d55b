# SALT-Net R50-FPN 2x multi-scale on COCO (SALT-Net paper Table 5: 46.1 AP on test-dev, with SDR).
# mmdet's GFL R50 multi-scale 2x with SALT's head as salt_r50_fpn_1x_coco.py, and the paper's
# scale range: the shorter side drawn from [400, 960] (Sec. 4.6; mmdet's GFL uses [480, 800]).
_base_ = 'mmdet::gfl/gfl_r50_fpn_ms-2x_coco.py'
custom_imports = dict(imports=['distill'], allow_failed_imports=False)
model = dict(
    type='SALTNet',
    bbox_head=dict(
        type='SALTHead', stacked_convs=3, num_points=9, cls_points='exp', skip=True,
        loss_dfl=dict(type='DistributionFocalLoss', loss_weight=0.5),
        loss_bbox_stage1=dict(type='GIoULoss', loss_weight=1.0)),
    test_cfg=dict(box_stage=2))
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=[(1333, 400), (1333, 960)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(type='CheckedCocoDataset', pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = val_dataloader
