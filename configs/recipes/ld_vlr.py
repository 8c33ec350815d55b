# Main LD + VLR LD (LD paper, Algorithm 1: gamma = 0.25, positives excluded from the VLR).
# Both weighted by the student's confidence and divided by the region size (see ld.py).
edges = [
    dict(name=f'{region}_ld',
         loss=dict(type='LDLoss', T=10, loss_weight=0.25),
         student=dict(tap='head', index=1), teacher=dict(tap='head', index=1),
         region=dict(type=region_type, weight='score', **extra), normalize='count')
    for region, region_type, extra in [('main', 'MainRegion', {}),
                                       ('vlr', 'VLRRegion', dict(gamma=0.25))]
]
