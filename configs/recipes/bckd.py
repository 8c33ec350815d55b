# BCKD (Yang et al., ICCV 2023, arXiv 2308.14286) for sigmoid-classifier heads with decoded
# boxes (GFL; any head with `cls_logits` and `boxes`). Two edges over every prior:
# - bckd_cls: each class a binary problem on the sigmoid scores, the BCE against the teacher's
#   score weighted by |p_t - p_s| and summed over the classes (B1-B2), weight alpha_1 = 1;
# - bckd_loc: 1 - IoU between the student's and the teacher's decoded boxes, each prior
#   weighted by max_j |p_t - p_s| (B3; ScoreGapRegion, detached), weight alpha_2 = 4.
# Both divided by the student's positives over the batch and GPUs (the published code's
# avg_factor; the transcribed equations are plain sums). The equations and weights are the
# paper's as transcribed by third-party readings (its text was not readable here); the
# published code's GIoU localisation: bckd_published.py. docs/methods.md, "BCKD".
edges = [
    dict(name='bckd_cls',
         loss=dict(type='BCKDClsLoss', loss_weight=1.0),
         student=dict(output='cls_logits'), teacher=dict(output='cls_logits'),
         region=dict(type='AllRegion'), normalize='positives'),
    dict(name='bckd_loc',
         loss=dict(type='BCKDLocLoss', mode='iou', loss_weight=4.0),
         student=dict(output='boxes'), teacher=dict(output='boxes'),
         region=dict(type='ScoreGapRegion'), normalize='positives'),
]
