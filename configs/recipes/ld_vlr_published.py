# Main LD + VLR LD at the published code's scale. Main LD as ld_published.py. VLR LD: each VLR
# prior (Algorithm 1, positives included) weighted by its IoU with the GT (weight='iou'), the
# bin-averaged KL summed and divided by a constant 16 (0.25 x the Main LD factor 4). Both
# grow with the per-GPU batch size; the paper's definition is ld_vlr.py.
edges = [
    dict(name=f'{region}_ld',
         loss=dict(type='LDLoss', T=10, loss_weight=0.25, bins='mean'),
         student=dict(output='box_dist'), teacher=dict(output='box_dist'),
         region=region_cfg, normalize=factor)
    for region, region_cfg, factor in [
        ('main', dict(type='MainRegion', weight='score'), 4.0),
        ('vlr', dict(type='VLRRegion', gamma=0.25, weight='iou', exclude_positives=False), 16.0)]
]
