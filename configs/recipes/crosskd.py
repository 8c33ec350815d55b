# CrossKD (Wang et al., CVPR 2024) for heads with GFL's outputs: GFL, SALT-Net, and ATSS, DDOD
# and MOD with their general-distribution option (box_dist=16). The student's tower features
# entering each tower's last conv (layer=-1: CrossKD's "3 of 4" for GFL) run through the
# teacher's remaining conv and predictors; those cross-head predictions mimic the teacher's,
# and the student's own predictions keep the ground truth alone.
# - class branch: quality-focal KD (beta 1) over every prior, divided by the student's
#   positives (the normaliser of its own QFL, as the published code);
# - box branch: KL on the bins at T = 1 (LDLoss: summed over the 4 sides, so 0.75 here is the
#   published weight 3 on their mean) and GIoU on the decoded boxes (weight 2), each prior
#   weighted by the teacher's max class score, a weighted mean (1/|S|, S = that score).
# docs/crosskd_pkd.md lists where this departs from the published code and how to get it.
cross = dict(of='cross', layer=-1)
edges = [
    dict(name='crosskd_cls',
         loss=dict(type='QFLKDLoss', beta=1.0, loss_weight=1.0),
         student=dict(output='cls_logits', **cross), teacher=dict(output='cls_logits'),
         region=dict(type='AllRegion'), normalize='positives'),
    dict(name='crosskd_kl',
         loss=dict(type='LDLoss', T=1, loss_weight=0.75),
         student=dict(output='box_dist', **cross), teacher=dict(output='box_dist'),
         region=dict(type='TeacherScoreRegion'), normalize='weight'),
    dict(name='crosskd_giou',
         loss=dict(type='IoUKDLoss', mode='giou', loss_weight=2.0),
         student=dict(output='boxes', **cross), teacher=dict(output='boxes'),
         region=dict(type='TeacherScoreRegion'), normalize='weight'),
]
