# SALT-Net R50-FPN 1x on COCO (SALT-Net paper Table 1: 42.5 AP on val2017; SDR, Table 4: 42.8).
# mmdet's GFL R50 1x (data, schedule, ATSS assignment, QFL, GIoU) with SALT's head: a 3-conv
# tower per task (paper Fig. 3), N = 9 task-aware points, Eq. 10's loss weights (QFL 1, GIoU
# stage 1 1, GIoU stage 2 2, DFL 0.5; the published code uses DFL 0.25). Trains on train2017
# (the published 1x config trains on val2017, a bug not reproduced). SDR is a recipe:
#   python tools/train_distill.py --student configs/coco/salt_r50_fpn_1x_coco.py --recipe sdr
# and as the student of the GFL R101 teacher (plus SDR from itself):
#   python tools/train_distill.py --student configs/coco/salt_r50_fpn_1x_coco.py \
#       --teacher configs/coco/gfl_r101_fpn_1x_coco.py --teacher-ckpt <gfl_r101.pth> \
#       --recipe kd_ld_vlr sdr
_base_ = 'mmdet::gfl/gfl_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['distill'], allow_failed_imports=False)
model = dict(
    type='SALTNet',
    bbox_head=dict(
        type='SALTHead', stacked_convs=3, num_points=9, cls_points='exp', skip=True,
        loss_dfl=dict(type='DistributionFocalLoss', loss_weight=0.5),
        loss_bbox_stage1=dict(type='GIoULoss', loss_weight=1.0)),
    # box_stage: 2 = refined boxes (default), 1 = coarse boxes; both ranked by the refined scores
    test_cfg=dict(box_stage=2))
train_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = val_dataloader
