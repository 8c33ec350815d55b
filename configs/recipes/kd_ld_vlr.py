# Main KD + Main LD + VLR LD: the LD paper's best recipe (Table 2, last row).
# KD: T = 2 as the published code, a confidence-weighted mean over the positives. LD: see ld.py.
edges = [
    dict(name='main_kd',
         loss=dict(type='KDLoss', T=2, loss_weight=0.25),
         student=dict(tap='head', index=0), teacher=dict(tap='head', index=0),
         region=dict(type='MainRegion', weight='score')),
] + [
    dict(name=f'{region}_ld',
         loss=dict(type='LDLoss', T=10, loss_weight=0.25),
         student=dict(tap='head', index=1), teacher=dict(tap='head', index=1),
         region=dict(type=region_type, weight='score', **extra), normalize='count')
    for region, region_type, extra in [('main', 'MainRegion', {}),
                                       ('vlr', 'VLRRegion', dict(gamma=0.25))]
]
