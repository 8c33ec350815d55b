# GFL R18-FPN 1x on COCO: the LD paper's lightest student (35.8 AP baseline, Table 4).
# mmdet's GFL R50 config with a ResNet-18 backbone (ImageNet weights, as the paper).
_base_ = 'mmdet::gfl/gfl_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['distill'], allow_failed_imports=False)
model = dict(
    backbone=dict(depth=18, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')),
    neck=dict(in_channels=[64, 128, 256, 512]))
train_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = val_dataloader
