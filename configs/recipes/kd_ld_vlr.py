# Main KD + Main LD + VLR LD: the LD paper's best recipe (Eq. 5 with lambda_6 = 0; Table 2,
# last row). KD: T = 2 as the published code, a confidence-weighted mean over the positives.
# Main LD as ld.py; VLR LD as ld_vlr.py (Algorithm 1's indicator mask, positives included).
edges = [
    dict(name='main_kd',
         loss=dict(type='KDLoss', T=2, loss_weight=0.25),
         student=dict(output='cls_logits'), teacher=dict(output='cls_logits'),
         region=dict(type='MainRegion', weight='score')),
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
