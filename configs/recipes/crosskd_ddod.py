# CrossKD (Wang et al., CVPR 2024) for DDOD heads that predict box deltas: crosskd_atss.py
# with DDOD's IoU branch in place of ATSS's centerness (the paper has no DDOD recipe; this
# distils the same three branches). With box_dist=16 use crosskd.py (GFL's form) instead.
cross = dict(of='cross', layer=-1)
edges = [
    dict(name='crosskd_cls',
         loss=dict(type='QFLKDLoss', beta=1.0, loss_weight=1.0),
         student=dict(output='cls_logits', **cross), teacher=dict(output='cls_logits'),
         region=dict(type='AllRegion'), normalize='positives'),
    dict(name='crosskd_giou',
         loss=dict(type='IoUKDLoss', mode='giou', loss_weight=1.0),
         student=dict(output='boxes', **cross), teacher=dict(output='boxes'),
         region=dict(type='TeacherScoreRegion'), normalize='positives'),
    dict(name='crosskd_iou',
         loss=dict(type='QFLKDLoss', beta=0.0, loss_weight=1.0),
         student=dict(output='iou', **cross), teacher=dict(output='iou'),
         region=dict(type='MainRegion', weight='ones'), normalize='positives'),
]
