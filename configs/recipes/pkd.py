# PKD (Cao et al., NeurIPS 2022): FPN-feature imitation after per-channel standardisation
# (MSE / 2 = 1 - Pearson correlation), every level, every location; equal to mmrazor 1.0's
# PKDLoss. Loss weight 6 as the CrossKD + PKD configs. Where the student's FPN is narrower
# than the teacher's (tiny pair: 48 vs 96 channels), a 1x1 adapter is trained with the student
# and left out of the exported student.
edges = [
    dict(name='pkd',
         loss=dict(type='PKDFeatureLoss', loss_weight=6.0),
         student=dict(output='neck'), teacher=dict(output='neck'),
         region=dict(type='AllRegion')),
]
