# PKD (configs/recipes/pkd.py) with distillation switched off for the last 25 % of the epochs
# (the student trains on its own losses alone at the end, as MMYOLO's RTMDet distillation does
# for its last 20 of 300 epochs); the fraction follows --epochs (docs/usage.md).
edges = [
    dict(name='pkd',
         loss=dict(type='PKDFeatureLoss', loss_weight=6.0),
         student=dict(output='neck'), teacher=dict(output='neck'),
         region=dict(type='AllRegion'),
         weight_schedule=dict(type='off', after_frac=0.75)),
]
