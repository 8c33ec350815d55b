# FGD (Yang et al., CVPR 2022): focal and global distillation of every FPN level. Focal: the
# squared error weighted by the teacher's spatial and channel attentions (T = 0.5), split into
# foreground (each GT box's cells weighted 1 / (H_k W_k): FGDRegion) and background (1 / N_bg);
# an L1 loss between the student's and the teacher's attentions; global: a GcBlock per level
# on each side (trained with the student, not exported), squared error between them.
# alpha, beta, gamma, lambda = 1e-3, 5e-4, 5e-4, 5e-6 and T = 0.5: the authors' GFL and
# RetinaNet configs (fgd_gfl_r101_distill_gfl_r50_fpn_1x_coco.py,
# fgd_retina_r101_fpn_2x_distill_retina_r50_fpn_2x_coco.py). Their "inheriting" start (the
# student's neck and head initialised from the teacher's) is not part of this recipe.
# channels / num_levels None: read from the teacher's neck when the graph is built (256 and
# 5, P3-P7, for COCO; 96 and 3 on the tiny pair). docs/feature_methods.md.
edges = [
    dict(name='fgd',
         loss=dict(type='FGDFeatureLoss', channels=None, num_levels=None, temp=0.5,
                   alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4, lambda_fgd=5e-6),
         student=dict(output='neck'), teacher=dict(output='neck'),
         region=dict(type='FGDRegion', strides=(8, 16, 32, 64, 128))),
]
