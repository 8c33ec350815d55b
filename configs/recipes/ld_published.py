# Main LD at the published code's scale (= mmdet 3.3's LDHead): the KL averaged over the
# reg_max + 1 bins (bins='mean'), each positive weighted by the student's confidence, the sum
# divided by a constant 4 (per GPU and batch: the loss grows with the per-GPU batch size; the
# authors advise at most 3 images per GPU). tests/graph/test_mmdet_ld_equivalence.py checks
# that this equals mmdet's KnowledgeDistillationSingleStageDetector + LDHead exactly.
edges = [
    dict(name='main_ld',
         loss=dict(type='LDLoss', T=10, loss_weight=0.25, bins='mean'),
         student=dict(output='box_dist'), teacher=dict(output='box_dist'),
         region=dict(type='MainRegion', weight='score'), normalize=4.0),
]
