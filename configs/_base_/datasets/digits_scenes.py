# digits-scenes: real handwritten digits on real photos, generated on first use into the cache
# (distill/datasets/digits_scenes.py). Long side 256 px = the Resize scale: no resampling.
dataset_name = 'digits-scenes'
data_seed = 0
classes = tuple(str(d) for d in range(10))
metainfo = dict(classes=classes)
backend_args = None

# No flips: a mirrored digit is not a digit.
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(256, 256), keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(256, 256), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(type='EmbeddedCocoDataset', name=dataset_name, split='train', seed=data_seed,
                 metainfo=metainfo, filter_cfg=dict(filter_empty_gt=True, min_size=4),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='EmbeddedCocoDataset', name=dataset_name, split='val', seed=data_seed,
                 metainfo=metainfo, test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='EmbeddedCocoMetric', name=dataset_name, split='val', seed=data_seed,
                     metric='bbox', format_only=False)
test_evaluator = val_evaluator
