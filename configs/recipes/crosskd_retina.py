# CrossKD (Wang et al., CVPR 2024) for RetinaNet (mmdet's RetinaHead: class logits and box
# deltas on A anchors per location; student and teacher need the same anchors). The student's
# features enter before each tower's last conv (layer=-1: the published RetinaNet config's
# reused_teacher_head_idx=3, "3 of 4"); quality-focal KD on the class scores over every prior
# (beta 1, weight 1) and GIoU on the decoded boxes weighted by the teacher's max class score
# (weight 1), as that config's kd_cfg; both divided by the student's positives, as
# crosskd_atss.py. docs/crosskd_pkd.md lists the departures common to the CrossKD recipes.
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
]
