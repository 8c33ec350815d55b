# Main KD: classification KD on the student's positives (LD paper, Table 2 row "Main KD").
# T = 2 as the published LD code; the loss is a weighted mean over the region (see docs/methods.md).
edges = [
    dict(name='main_kd',
         loss=dict(type='KDLoss', T=2, loss_weight=0.25),
         student=dict(output='cls_logits'), teacher=dict(output='cls_logits'),
         region=dict(type='MainRegion', weight='score')),
]
