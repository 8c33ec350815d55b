# BCKD with the published code's localisation term (TinyTigerPan/BCKD,
# bckd_r50_gflv1_r101_fpn_coco_1x.py: loss_score_kd = GIoULoss, weight 4) instead of the
# paper's 1 - IoU; everything else as bckd.py. The published code's other departures (each
# FPN level without a student positive distils nothing; priors outside the image are left
# out) are not reproduced: docs/methods.md, "BCKD".
edges = [
    dict(name='bckd_cls',
         loss=dict(type='BCKDClsLoss', loss_weight=1.0),
         student=dict(output='cls_logits'), teacher=dict(output='cls_logits'),
         region=dict(type='AllRegion'), normalize='positives'),
    dict(name='bckd_loc',
         loss=dict(type='BCKDLocLoss', mode='giou', loss_weight=4.0),
         student=dict(output='boxes'), teacher=dict(output='boxes'),
         region=dict(type='ScoreGapRegion'), normalize='positives'),
]
