# MGD (Yang et al., ECCV 2022): masked generative distillation of every FPN level. 65% of the
# student's positions are zeroed at random (torch's global generator, seeded by the run), a
# generation block per level (3x3 conv, ReLU, 3x3 conv; trained with the student, not exported)
# regenerates the map, and its squared error to the teacher's map (summed, / batch size) is
# the loss, times alpha_mgd. alpha_mgd = 2e-5, lambda_mgd = 0.65: the authors' RetinaNet
# config (yzd-v/MGD) and mmrazor 1.0's. channels / num_levels None:
# read from the teacher's neck when the graph is built (256 and 5, P3-P7, for COCO GFL /
# RetinaNet; 96 and 3 on the tiny pair); explicit values are checked against the maps at the
# first step. docs/feature_methods.md.
edges = [
    dict(name='mgd',
         loss=dict(type='MGDFeatureLoss', channels=None, num_levels=None, alpha_mgd=2e-5,
                   lambda_mgd=0.65),
         student=dict(output='neck'), teacher=dict(output='neck'),
         region=dict(type='AllRegion')),
]
