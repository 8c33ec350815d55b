"""What the teacher-output cache refuses and how it keys its records (issue 30): every random
transform of mmdet 3.3 found through its registry, under any nesting; batch augmentations of
the student's preprocessor; the checkpoint hashed again when it changes; image keys that need
their source; directory scans that survive vanishing files; the disk budget at every store."""

import inspect
import os
import re

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config

from distill.cli.train_distill import build_distill_config
from distill.graph import TeacherCache, TeacherCacheError, cache_key, teacher_cache
from distill.graph.cache_check import (
    check_deterministic,
    check_preprocessors,
    random_transforms,
    scan_pipeline,
)
from distill.graph.cache_key import (
    SOURCE_FIELD,
    SourceTagged,
    checkpoint_sha256,
    image_key,
    tag_sources,
)
from distill.graph.teacher_cache import folder_bytes

STUDENT = 'configs/tiny/gfl_s_digits.py'
TEACHER = 'configs/tiny/gfl_l_digits.py'
SHIPPED = 'checkpoints/gfl_l_digits_e24_seed0.pth'
#: Calls that draw random numbers, in a transform's source.
DRAWS = re.compile(r'np\.random\.\w+|\brandom\.(?:rand\w*|uniform|choice|sample|shuffle|'
                   r'random|permutation)|torch\.rand\w*|cache_randomness')


def _registered_transforms():
    """Every transform class mmdet's TRANSFORMS registry resolves (mmcv's, mmengine's)."""
    from mmdet.registry import TRANSFORMS
    TRANSFORMS.import_from_location()
    import mmcv.transforms  # noqa: F401
    seen, registry = {}, TRANSFORMS
    while registry is not None:
        for name, cls in registry.module_dict.items():
            seen.setdefault(name, cls)
        registry = registry.parent
    return seen


def _draws(cls) -> bool:
    src = ''
    for c in cls.__mro__:
        if c.__module__.startswith(('mmdet.', 'mmcv.')) and c.__name__ != 'BaseTransform':
            src += inspect.getsource(c)
    return bool(DRAWS.search(src))


def test_every_random_transform_of_mmdet_is_refused_and_the_deterministic_ones_pass():
    transforms = _registered_transforms()
    random = sorted(n for n, c in transforms.items() if _draws(c)) + ['Corrupt']
    assert {'RandomFlip', 'RandomResize', 'PhotoMetricDistortion', 'Expand', 'MinIoURandomCrop',
            'Mosaic', 'MixUp', 'CopyPaste', 'CachedMosaic', 'CachedMixUp', 'YOLOXHSVRandomAug',
            'AutoAugment', 'RandAugment', 'InstaBoost', 'Albu', 'RandomChoice', 'RandomApply',
            'RandomCrop', 'RandomAffine', 'RandomErasing', 'CutOut', 'Rotate',
            'Brightness'} <= set(random)
    for name in random:  # without keys for flips and scales: every one refused
        assert random_transforms([dict(type=name, prob=0.5)], keyed=False) == [f'0: {name}'], name
    keyed = {n for n in random if not random_transforms([dict(type=n, prob=0.5)])}
    assert keyed == {'RandomFlip', 'RandomResize', 'RandomChoiceResize'}
    for name in ('LoadImageFromFile', 'LoadAnnotations', 'Resize', 'FixShapeResize', 'Pad',
                 'ResizeShortestEdge', 'FilterAnnotations', 'Normalize', 'PackDetInputs',
                 'mmdet.Resize', 'mmcv.Resize'):
        assert random_transforms([dict(type=name)], keyed=False) == [], name


def test_nested_pipelines_are_walked_under_any_key():
    pme = dict(type='PhotoMetricDistortion')
    assert random_transforms([dict(type='Resize'), dict(type='RandomChoice', transforms=[
        [dict(type='Resize')], [dict(type='Resize')]])]) == ['1: RandomChoice']
    assert random_transforms([dict(type='KeyMapper', mapping=dict(img='gt'),
                                   transforms=[dict(type='Resize'), pme])]) == [
        '0.transforms.1: PhotoMetricDistortion']
    assert random_transforms([dict(type='TransformBroadcaster', transforms=pme)]) == [
        '0.transforms.0: PhotoMetricDistortion']
    assert random_transforms([dict(type='MultiBranch', branch_field=['sup'],
                                   sup=[dict(type='Resize'), [dict(type='Expand')]])]) == [
        '0.sup.1.0: Expand']
    assert random_transforms([dict(type='KeyMapper', transforms=[
        dict(type='RandomFlip', prob=0.5)])], keyed=False) == ['0.transforms.0: RandomFlip']
    assert scan_pipeline([dict(type='KeyMapper', transforms=[
        dict(type='RandomFlip', prob=0.5)])])[1] == {'flip', 'flip_direction'}
    # what cannot be told random or not is refused
    found = random_transforms([dict(type='NoSuchTransform'), lambda results: results])
    assert len(found) == 2 and found[0].startswith('0: NoSuchTransform (unknown')
    cfg = Config(dict(train_dataloader=dict(dataset=dict(type='ConcatDataset', datasets=[
        dict(type='X', pipeline=[dict(type='Resize')]),
        dict(type='X', pipeline=[dict(type='RandomApply', transforms=[pme])])]))))
    with pytest.raises(TeacherCacheError, match=r"run.py: .* train_dataloader\.dataset\."
                                                r"datasets\.1\.pipeline has the random "
                                                r"transform\(s\) \['0: RandomApply'\]"):
        check_deterministic(cfg, 'run.py')


def test_batch_augments_of_the_students_preprocessor_are_refused(repo):
    """A train_distill config has no model.data_preprocessor: the student's is used."""
    random_aug = [dict(type='BatchSyncRandomResize', random_size_range=(160, 256))]
    cfg = build_distill_config(str(repo / STUDENT), 'kd', str(repo / TEACHER),
                               str(repo / SHIPPED),
                               {'model.data_preprocessor.batch_augments': random_aug})
    # the old check read model.data_preprocessor only, which this config does not have
    assert cfg.model.get('data_preprocessor') is None
    with pytest.raises(TeacherCacheError) as e:
        check_deterministic(cfg, 'student.py')
    assert str(e.value).startswith('student.py: ') and '\n' not in str(e.value)
    assert ("model.architecture.data_preprocessor.batch_augments has the random (or unknown) "
            "batch augmentation(s) ['BatchSyncRandomResize']") in str(e.value)
    # deterministic ones pass, in the config and in the built graph
    fixed = [dict(type='BatchFixedSizePad', size=(256, 256))]
    ok = build_distill_config(str(repo / STUDENT), 'kd', str(repo / TEACHER),
                              str(repo / SHIPPED),
                              {'model.data_preprocessor.batch_augments': fixed})
    check_deterministic(ok, 'student.py')
    from mmengine.registry import init_default_scope
    from mmrazor.registry import MODELS
    init_default_scope('mmdet')
    graph = MODELS.build(ok.model)
    check_preprocessors(graph, 'student.py')
    graph.architecture.data_preprocessor.batch_augments.append(  # built, not in the config
        MODELS.build(dict(random_aug[0], _scope_='mmdet')))
    assert graph.data_preprocessor is graph.architecture.data_preprocessor  # mmrazor's default
    with pytest.raises(TeacherCacheError, match=r'student.py: .*model\.architecture\.'
                                                r'data_preprocessor\.batch_augments has '
                                                r'.*BatchSyncRandomResize'):
        check_preprocessors(graph, 'student.py')


def test_the_checkpoint_is_hashed_again_exactly_when_it_changed(tmp_path, monkeypatch):
    calls = []
    real = cache_key.sha256_file
    monkeypatch.setattr(cache_key, 'sha256_file', lambda p: calls.append(p) or real(p))
    monkeypatch.setattr(cache_key, '_memo', {})
    ckpt, memo = tmp_path / 'teacher.pth', tmp_path / 'cache'
    ckpt.write_bytes(b'a' * 1000)
    first = checkpoint_sha256(str(ckpt), str(memo))
    assert checkpoint_sha256(str(ckpt), str(memo)) == first and len(calls) == 1
    monkeypatch.setattr(cache_key, '_memo', {})  # a new process reads the memo file
    assert checkpoint_sha256(str(ckpt), str(memo)) == first and len(calls) == 1
    st = os.stat(ckpt)
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: hashed again
    assert checkpoint_sha256(str(ckpt), str(memo)) == first and len(calls) == 2
    # replaced by another file of the same size, its mtime set back: still hashed again
    other = tmp_path / 'other.pth'
    other.write_bytes(b'b' * 1000)
    st = os.stat(ckpt)
    os.replace(other, ckpt)
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = checkpoint_sha256(str(ckpt), str(memo))
    assert second != first and len(calls) == 3


def test_an_image_key_needs_its_source_and_shapes_and_never_drops_them():
    meta = dict(img_path='/none/1.jpg', img_id=1, img_shape=(4, 5), batch_input_shape=(8, 8),
                **{SOURCE_FIELD: 'a'})
    assert image_key(meta) != image_key(dict(meta, **{SOURCE_FIELD: 'b'}))
    for field in (SOURCE_FIELD, 'img_shape', 'batch_input_shape'):
        with pytest.raises(TeacherCacheError, match=rf"has no \['{field}'\] in its metainfo"):
            image_key({k: v for k, v in meta.items() if k != field})
    sources = dict(a=('flip', 'flip_direction'))
    with pytest.raises(TeacherCacheError, match=r"has no \['flip', 'flip_direction'\]"):
        image_key(meta, sources)
    with pytest.raises(TeacherCacheError, match=r"source b, not one of .*\['a'\]"):
        image_key(dict(meta, **{SOURCE_FIELD: 'b'}), sources)
    flipped = dict(meta, flip=True, flip_direction='horizontal')
    assert image_key(flipped, sources) != image_key(dict(flipped, flip=False), sources)


class _Leaf:
    def __init__(self):
        self.pipeline = lambda data: dict(inputs=None, data_samples=DetDataSample())


class _Concat:
    def __init__(self, *datasets):
        self.datasets = list(datasets)


def test_each_leaf_dataset_tags_its_samples_with_its_own_source():
    a = dict(type='X', ann_file='a.json', pipeline=[dict(type='Resize')], indices=4)
    b = dict(a, pipeline=[dict(type='Resize'), dict(type='RandomFlip', prob=0.5)])
    concat = _Concat(_Leaf(), _Leaf())
    cfg = dict(type='ConcatDataset', datasets=[a, b])
    sources = tag_sources(cfg, concat, lambda p: scan_pipeline(p)[1])
    assert len(sources) == 2 and sorted(sources.values()) == [(), ('flip', 'flip_direction')]
    tags = [d.pipeline({})['data_samples'].metainfo[SOURCE_FIELD] for d in concat.datasets]
    assert tags[0] != tags[1] and set(tags) == set(sources)
    again = tag_sources(cfg, concat)  # tagged twice: wrapped once
    assert set(again) == set(sources)
    assert not isinstance(concat.datasets[0].pipeline.pipeline, SourceTagged)
    assert set(tag_sources(dict(a, indices=2), _Leaf())) == {tags[0]}  # a subset: same source
    with pytest.raises(TeacherCacheError, match=r'train_dataloader.dataset is a _Concat of 2 '
                                                r'datasets, but its config has datasets=None'):
        tag_sources(a, concat)


def _cache(directory, **kw):
    return TeacherCache('k' * 64, dict(out={}), str(directory), num_images=None, **kw)


class _Manager:
    """A recorder manager holding one tap's batch record (as the teacher's after a step)."""

    def __init__(self, batch):
        self.recorder = type('R', (), {'data_buffer': [batch]})()

    def get_recorder(self, name):
        return self.recorder


def _samples(ids):
    return [DetDataSample(metainfo={'img_id': i, 'img_shape': (4, 4),
                                    'batch_input_shape': (4, 4), SOURCE_FIELD: 's'})
            for i in ids]


def test_scans_and_reads_survive_files_vanishing(tmp_path, monkeypatch):
    cache = _cache(tmp_path)
    images = cache.image_keys(_samples(range(4)))
    cache.store(_Manager(torch.randn(4, 1000)), images)
    files = sorted((tmp_path / ('k' * 24)).glob('*/*.pt'))
    assert len(files) == 4
    full = folder_bytes(cache.directory)
    real_scan = teacher_cache._scan

    def scan_then_vanish(path):  # another rank renames a file between scandir and stat
        entries = real_scan(path)
        if path.endswith('.pt') or not entries or not entries[0].name.endswith('.pt'):
            return entries
        os.unlink(entries[0].path)
        return entries

    monkeypatch.setattr(teacher_cache, '_scan', scan_then_vanish)
    assert folder_bytes(cache.directory) == full * 3 // 4
    assert folder_bytes(str(tmp_path / 'gone')) == 0
    monkeypatch.undo()
    fresh = _cache(tmp_path)
    monkeypatch.setattr(teacher_cache.osp, 'isfile', lambda p: True)  # seen, then deleted
    assert fresh.load(images) is None and fresh.stats['rebuilt'] == 0


def _fill(caches, batches=4):
    """Each cache (a rank) stores ``batches`` batches of 2 images of its own, in turn."""
    for i in range(batches):
        for r, cache in enumerate(caches):
            ids = [100 * r + 2 * i, 100 * r + 2 * i + 1]
            cache.store(_Manager(torch.randn(2, 4000)), cache.image_keys(_samples(ids)))


def test_the_disk_budget_is_kept_at_every_store_across_ranks(tmp_path, monkeypatch):
    probe = _cache(tmp_path / 'probe')
    _fill([probe], 1)
    size = max(p.stat().st_size for p in (tmp_path / 'probe').glob('*/*/*.pt'))
    budget = 5.5 * size / 2**20  # 5 files
    cache = _cache(tmp_path / 'one', memory_mb=0, disk_mb=budget)
    _fill([cache])  # 8 images: the budget is met in the third batch
    assert len(list((tmp_path / 'one').glob('*/*/*.pt'))) == 5 and cache._disk_full
    assert cache.stats == dict(hits=0, misses=0, disk_reads=0, rebuilt=0)
    # two ranks share the folder: each counts its own writes once per rank and measures the
    # folder again near the budget, so that together they keep it
    monkeypatch.setattr(teacher_cache, 'get_world_size', lambda: 2)
    ranks = [_cache(tmp_path / 'two', memory_mb=0, disk_mb=budget) for _ in range(2)]
    _fill(ranks)
    assert folder_bytes(ranks[0].directory) <= ranks[0].disk_budget
    assert len(list((tmp_path / 'two').glob('*/*/*.pt'))) == 5
    # counting its own writes once (as with one rank), a rank would go over the budget
    monkeypatch.setattr(teacher_cache, 'get_world_size', lambda: 1)
    ranks = [_cache(tmp_path / 'once', memory_mb=0, disk_mb=budget) for _ in range(2)]
    _fill(ranks)
    assert len(list((tmp_path / 'once').glob('*/*/*.pt'))) > 5
    # and checked at the first store only (the old cache), the budget held nothing back
    monkeypatch.setattr(TeacherCache, '_disk_room', lambda self, n: True)
    old = _cache(tmp_path / 'old', memory_mb=0, disk_mb=budget)
    _fill([old])
    assert len(list((tmp_path / 'old').glob('*/*/*.pt'))) == 8
