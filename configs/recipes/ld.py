# Main LD: localization distillation on the student's positives (LD paper Eq. 2-4, T = 10).
# Each box weighted by the student's (detached) confidence, as GFL weights its box losses, and
# the sum divided by the number of boxes ('count'): LD then grows as the student becomes
# confident, as in the published code, whose loss is not normalised at all (but then also grows
# with the batch size). See docs/results_digits_gfl_s.md for the tuning-split evidence.
edges = [
    dict(name='main_ld',
         loss=dict(type='LDLoss', T=10, loss_weight=0.25),
         student=dict(output='box_dist'), teacher=dict(output='box_dist'),
         region=dict(type='MainRegion', weight='score'), normalize='count'),
]
