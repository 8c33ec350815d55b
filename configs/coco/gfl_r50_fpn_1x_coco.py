# GFL R50-FPN 1x on COCO (the LD paper's student baseline, 40.1 AP in the paper's Table 8).
# mmdet's own config, with distill's checked dataset (clear errors on a wrong data_root).
# Data in data/coco/ as in mmdet: annotations/instances_{train,val}2017.json, train2017/, val2017/.
_base_ = 'mmdet::gfl/gfl_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['distill'], allow_failed_imports=False)
train_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = val_dataloader
