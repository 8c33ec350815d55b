# CrossKD (Wang et al., CVPR 2024) for ATSS heads that predict box deltas (mmdet's ATSSHead).
# Cross-head predictions from the teacher head, entered before each tower's last conv
# (layer=-1, the paper's "3 of 4"), mimic the teacher's: the class scores with quality-focal KD
# over every prior, the decoded boxes with GIoU weighted by the teacher's max class score, the
# centerness with BCE on the soft teacher centerness (QFLKDLoss, beta 0) at the student's
# positives; every term divided by the student's positives, as the published ATSS code.
# Weights: the published ATSS config (1, 1, 1). docs/crosskd_pkd.md lists the departures.
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
    dict(name='crosskd_centerness',
         loss=dict(type='QFLKDLoss', beta=0.0, loss_weight=1.0),
         student=dict(output='centerness', **cross), teacher=dict(output='centerness'),
         region=dict(type='MainRegion', weight='ones'), normalize='positives'),
]
