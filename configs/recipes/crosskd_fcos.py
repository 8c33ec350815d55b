# CrossKD (Wang et al., CVPR 2024) for FCOS-style heads of distances (MODHead without
# box_dist). The student's features enter before each tower's last two convs (layer=-2, the
# paper's "2 of 4" for FCOS); quality-focal KD on the class scores over every prior (weight
# 0.4) and -log IoU on the decoded boxes weighted by the teacher's max class score (0.75), as
# the published FCOS config; both divided by the student's positives (the published code:
# by the sum of their centerness targets). docs/crosskd_pkd.md lists the departures.
cross = dict(of='cross', layer=-2)
edges = [
    dict(name='crosskd_cls',
         loss=dict(type='QFLKDLoss', beta=1.0, loss_weight=0.4),
         student=dict(output='cls_logits', **cross), teacher=dict(output='cls_logits'),
         region=dict(type='AllRegion'), normalize='positives'),
    dict(name='crosskd_iou',
         loss=dict(type='IoUKDLoss', mode='log_iou', loss_weight=0.75),
         student=dict(output='boxes', **cross), teacher=dict(output='boxes'),
         region=dict(type='TeacherScoreRegion'), normalize='positives'),
]
