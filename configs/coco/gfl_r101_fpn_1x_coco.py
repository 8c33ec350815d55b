# GFL R101-FPN 1x on COCO (the LD paper's R101 baseline/teacher setting).
# mmdet's R50 1x config with a ResNet-101 backbone (ImageNet-pretrained, torchvision weights).
_base_ = 'mmdet::gfl/gfl_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['distill'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))
train_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = val_dataloader
