# Main LD + VLR LD (LD paper Eq. 5, the KD terms off; Table 2, row 5).
# Main LD as ld.py. VLR LD: Algorithm 1's mask as the paper defines it (an indicator, gamma =
# 0.25, both bounds inclusive, the student's positives included), averaged over the VLR priors.
# The published code's VLR (IoU weights, constant normalisers): ld_vlr_published.py.
edges = [
    dict(name='main_ld',
         loss=dict(type='LDLoss', T=10, loss_weight=0.25),
         student=dict(output='box_dist'), teacher=dict(output='box_dist'),
         region=dict(type='MainRegion', weight='score'), normalize='count'),
    dict(name='vlr_ld',
         loss=dict(type='LDLoss', T=10, loss_weight=0.25),
         student=dict(output='box_dist'), teacher=dict(output='box_dist'),
         region=dict(type='VLRRegion', gamma=0.25, weight='ones', exclude_positives=False),
         normalize='weight'),
]
