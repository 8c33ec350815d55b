# DDOD R50-FPN 1x on COCO (DDOD paper Table 3: ATSS 39.4 -> 41.6 AP on val2017). mmdet's DDOD
# config (data, schedule, anchors, DCN first conv in both towers, IoU branch) with the paper's
# head: separate cls / reg level counters (Eq. 3-5) saved in checkpoints and summed over GPUs,
# and the assigners' candidates as the paper's Sec. 4.1 (top-9 cost inside the GT per level;
# candidates='distance' is ATSS's, as mmdet and the published code).
#   python tools/train.py configs/coco/ddod_r50_fpn_1x_coco.py
# LD for DDOD (a student or a teacher of LD): --cfg-options model.bbox_head.box_dist=16
_base_ = 'mmdet::ddod/ddod_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['distill'], allow_failed_imports=False)
model = dict(
    bbox_head=dict(type='DDODPaperHead', box_dist=None),
    train_cfg=dict(
        assigner=dict(_delete_=True, type='DDODAssigner', alpha=0.8, topk=9, candidates='cost'),
        reg_assigner=dict(_delete_=True, type='DDODAssigner', alpha=0.5, topk=9,
                          candidates='cost')))
train_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = val_dataloader
