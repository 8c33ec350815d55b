# trees: DeepForest's annotated NEON aerial images, 256 px tiles, split by scene
# (distill/datasets/trees.py). Needs `pip install --no-deps deepforest==2.1.0` (make does it).
dataset_name = 'trees'
data_seed = 0
classes = ('tree', )
metainfo = dict(classes=classes)
backend_args = None

# Aerial views have no canonical orientation: flip both ways.
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(256, 256), keep_ratio=True),
    dict(type='RandomFlip', prob=[0.5, 0.5], direction=['horizontal', 'vertical']),
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
    # 94 training tiles: repeated 4x per epoch (as mmdet does for VOC), so that the tiny
    # runtime's 24-epoch schedule is ~1100 iterations (digits-scenes: 3000).
    dataset=dict(
        type='RepeatDataset',
        times=4,
        dataset=dict(type='EmbeddedCocoDataset', name=dataset_name, split='train',
                     seed=data_seed, metainfo=metainfo,
                     filter_cfg=dict(filter_empty_gt=True, min_size=2),
                     pipeline=train_pipeline)))
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
