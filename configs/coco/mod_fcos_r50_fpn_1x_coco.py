# MOD on FCOS, R50-FPN 1x on COCO (MOD paper Table 2: FCOS 39.4 -> 41.7 AP on val2017; RFA
# alone 40.5, APS alone 40.4). mmdet's FCOS with the improvements the paper's baseline uses
# (centre sampling, normalised distances, GIoU loss, the quality branch on the regression tower)
# and the paper's changes: its quality target is the predicted box's GIoU instead of
# centerness, the first conv of each tower is a modulated DCNv2 (RFA, Sec. 3.1; rfa='last' is
# the published code's position), and APS assigns the labels (Sec. 3.2: K = 9, 2 levels, GMM).
#   python tools/train.py configs/coco/mod_fcos_r50_fpn_1x_coco.py
# Table 2's rows: --cfg-options model.bbox_head.rfa=None (FCOS + APS); for FCOS (+ RFA) also
# drop the APS assigner: model.train_cfg.assigner=None.
# LD for MOD (a student or a teacher of LD): --cfg-options model.bbox_head.box_dist=16
_base_ = 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco.py'
custom_imports = dict(imports=['distill'], allow_failed_imports=False)
model = dict(
    # torchvision's R50 and its normalisation (mmdet's FCOS base uses the caffe R50): the same
    # input as the GFL / ATSS / DDOD configs, so a teacher of those pairs with this student
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True),
    backbone=dict(style='pytorch', norm_cfg=dict(type='BN', requires_grad=True),
                  init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    bbox_head=dict(type='MODHead', rfa='first', rfa_conv='PSDCNv2', quality='giou',
                   box_dist=None, box_dist_init=4.0),
    train_cfg=dict(
        assigner=dict(type='APSAssigner', topk=9, num_levels=2, cls_weight=1.0,
                      reg_weight=1.0, gamma=2.0, alpha=0.25)))
train_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = val_dataloader
