# CrossKD for RetinaNet as the published code runs it: crosskd_retina.py's edges, with both
# losses limited to the anchors the student's assigner does not ignore (label weight > 0; the
# MaxIoUAssigner ignores anchors whose best IoU lies between neg_iou_thr 0.4 and pos_iou_thr
# 0.5). The published RetinaNet code weights its class KD by the label weights and zeroes its
# box KD weights where they are 0; the paper distils every location (crosskd_retina.py).
cross = dict(of='cross', layer=-1)
edges = [
    dict(name='crosskd_cls',
         loss=dict(type='QFLKDLoss', beta=1.0, loss_weight=1.0),
         student=dict(output='cls_logits', **cross), teacher=dict(output='cls_logits'),
         region=dict(type='AssignedRegion'), normalize='positives'),
    dict(name='crosskd_giou',
         loss=dict(type='IoUKDLoss', mode='giou', loss_weight=1.0),
         student=dict(output='boxes', **cross), teacher=dict(output='boxes'),
         region=dict(type='TeacherScoreRegion', assigned_only=True), normalize='positives'),
]
