# MGD (Yang et al., ECCV 2022): masked generative distillation of every FPN level. 65% of the
# student's positions are zeroed at random (torch's global generator, seeded by the run), a
# generation block per level (3x3 conv, ReLU, 3x3 conv; trained with the student, not exported)
# regenerates the map, and its squared error to the teacher's map (summed, / batch size) is
# the loss, times alpha_mgd. alpha_mgd = 2e-5, lambda_mgd = 0.65: the authors' RetinaNet
# config (yzd-v/MGD) and mmrazor 1.0's. channels / num_levels: the teacher's neck (256
# channels, P3-P7 for COCO GFL / RetinaNet); the tiny pair needs channels=96, num_levels=3
# (the loss refuses other maps, saying so). docs/feature_methods.md.
edges = [
    dict(name='mgd',
         loss=dict(type='MGDFeatureLoss', channels=256, num_levels=5, alpha_mgd=2e-5,
                   lambda_mgd=0.65),
         student=dict(output='neck'), teacher=dict(output='neck'),
         region=dict(type='AllRegion')),
]
