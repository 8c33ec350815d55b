"""The teacher-output cache on the tiny GFL pair: a cached step equals an uncached one (losses
and gradients, float32 bit for bit), skips the teacher's forward, survives a new process
through its files, detects damaged and stale files, refuses random pipelines and budgets it
cannot meet."""

import copy
import glob
import os
import os.path as osp

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from distill.build import build_train_parts
from distill.cli.train_distill import build_distill_config
from distill.config_files import base_dataset_cfg
from distill.graph import TeacherCache, TeacherCacheError
from distill.graph.cache_key import SOURCE_FIELD, environment, tag_sources
from distill.graph.teacher_cache import image_key, teacher_key, tree_stack
from distill.graph.teacher_cache_hook import (
    check_deterministic,
    key_parts,
    random_transforms,
    weights_digest,
)

STUDENT = 'configs/tiny/gfl_s_digits.py'
TEACHER = 'configs/tiny/gfl_l_digits.py'
SHIPPED = 'checkpoints/gfl_l_digits_e24_seed0.pth'


@pytest.fixture(autouse=True)
def _scope():
    init_default_scope('mmdet')


@pytest.fixture(scope='module')
def run(repo):
    """A crosskd + pkd graph (head, neck and tower taps on the teacher) and 4 images."""
    init_default_scope('mmdet')
    cfg = build_distill_config(str(repo / STUDENT), ['crosskd', 'pkd'], str(repo / TEACHER),
                               str(repo / SHIPPED))
    model, dataset, _ = build_train_parts(cfg, 6, 0)
    tag_sources(base_dataset_cfg(cfg.train_dataloader.dataset), dataset)  # as the hook does
    batches = [pseudo_collate([dataset[i] for i in idx]) for idx in ([0, 1, 2], [3, 4, 5])]
    return model, batches


def _step(model, batch, cache=None):
    """Losses and student gradients of one step; how often the teacher ran its forward."""
    model.teacher_cache = cache
    calls = []
    handle = model.teacher.backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        model.zero_grad(set_to_none=True)
        data = model.data_preprocessor(batch, True)
        losses = {k: torch.stack([x.sum() for x in v]) if isinstance(v, list) else v
                  for k, v in model.loss(data['inputs'], data['data_samples']).items()}
        sum(v.sum() for k, v in losses.items() if 'loss' in k).backward()
    finally:
        handle.remove()
        model.teacher_cache = None
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach().clone() for k, v in losses.items()}, grads, len(calls)


def _cache(model, directory=None, **kw):
    return TeacherCache('k' * 64, dict(model.teacher_taps), str(directory) if directory else None,
                        num_images=kw.pop('num_images', 6), **kw)


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_cached_step_equals_uncached_and_skips_the_teacher(run, tmp_path):
    model, batches = run
    assert set(model.teacher_taps) >= {'head', 'neck'}  # and the crosskd tower taps
    ref = [_step(model, b) for b in batches]
    cache = _cache(model, tmp_path)
    cold = [_step(model, b, cache) for b in batches]
    warm = [_step(model, b, cache) for b in batches]
    for (l0, g0, n0), (l1, g1, n1), (l2, g2, n2) in zip(ref, cold, warm):
        assert (n0, n1, n2) == (1, 1, 0)  # the warm step never runs the teacher
        for losses, grads in ((l1, g1), (l2, g2)):
            _assert_same(l0, losses)
            _assert_same(g0, grads)  # crosskd's gradient through the teacher layers included
    assert not any(k.startswith('teacher') for k in ref[0][1])
    assert cache.stats['hits'] == 2 and cache.stats['misses'] == 2
    # one file per tap and image, under the key's folder
    assert len(glob.glob(str(tmp_path / ('k' * 24) / '*' / '*.pt'))) == 6 * len(model.teacher_taps)


def test_a_new_process_reads_the_files_and_rebuilds_damaged_or_stale_ones(run, tmp_path):
    model, batches = run
    ref = _step(model, batches[0])
    _step(model, batches[0], _cache(model, tmp_path))  # writes the files
    fresh = _cache(model, tmp_path)
    losses, grads, ran = _step(model, batches[0], fresh)
    assert ran == 0 and fresh.stats['disk_reads'] == 3 * len(model.teacher_taps)
    _assert_same(ref[0], losses)

    samples = model.data_preprocessor(batches[0], True)['data_samples']
    images = fresh.image_keys(samples)
    head = fresh.path('head', images[0])
    with open(head, 'wb') as f:
        f.write(b'not a torch file')  # damaged: does not load
    neck = fresh.path('neck', images[1])
    payload = torch.load(neck, weights_only=True)
    payload['records'][0][0][0, 0, 0] += 1.0  # damaged: a changed value, digest mismatch
    torch.save(payload, neck)
    other = fresh.path('head', images[2])
    os.replace(fresh.path('head', images[1]), other)  # stale: another image's record
    cache = _cache(model, tmp_path)
    losses, grads, ran = _step(model, batches[0], cache)
    assert ran == 1 and cache.stats['rebuilt'] == 3  # every damaged or stale file found
    _assert_same(ref[0], losses)
    _assert_same(ref[1], grads)
    again = _cache(model, tmp_path)
    losses, _, ran = _step(model, batches[0], again)
    assert ran == 0 and again.stats['rebuilt'] == 0  # rewritten, now valid
    _assert_same(ref[0], losses)


def test_float16_records_stay_within_the_documented_tolerance(run):
    model, batches = run
    ref, _, _ = _step(model, batches[1])
    cache = _cache(model, fp16=True)
    _step(model, batches[1], cache)
    assert all(t.dtype == torch.float16 for (recs, _) in cache.memory.values()
               for t in _tensors(recs) if t.is_floating_point())
    warm, _, ran = _step(model, batches[1], cache)
    assert ran == 0
    for k in ref:
        torch.testing.assert_close(warm[k], ref[k], rtol=2e-3, atol=1e-4)


def _tensors(node):
    if torch.is_tensor(node):
        return [node]
    return [t for x in node for t in _tensors(x)] if isinstance(node, (list, tuple)) else []


def test_budgets_are_checked_at_the_first_store_with_the_size_needed(run, tmp_path):
    model, batches = run
    with pytest.raises(TeacherCacheError, match=r'1000 images x \d+ KiB .* need \d+ MiB of '
                                                r'memory, over the memory budget of 1 MiB'):
        _step(model, batches[0], _cache(model, memory_mb=1, num_images=1000))
    with pytest.raises(TeacherCacheError, match=r'need \d+ MiB under .*over the disk budget '
                                                r'of 2 MiB'):
        _step(model, batches[0], _cache(model, tmp_path, memory_mb=0, disk_mb=2,
                                        num_images=1000))


def test_memory_only_and_disk_only(run, tmp_path):
    model, batches = run
    ref, _, _ = _step(model, batches[0])
    mem = _cache(model)
    _step(model, batches[0], mem)
    losses, _, ran = _step(model, batches[0], mem)
    assert mem.directory is None and mem.memory and ran == 0
    _assert_same(ref, losses)
    disk = _cache(model, tmp_path, memory_mb=0)
    _step(model, batches[0], disk)
    losses, _, ran = _step(model, batches[0], disk)
    assert not disk.memory and ran == 0 and disk.stats['disk_reads'] > 0
    _assert_same(ref, losses)


def test_tree_stack_inverts_the_per_image_slices():
    rec = ([torch.randn(3, 2, 4), torch.randn(3, 5)], (torch.arange(6).view(3, 2),))
    slices = [([rec[0][0][b], rec[0][1][b]], (rec[1][0][b],)) for b in range(3)]
    back = tree_stack(slices)
    assert torch.equal(back[0][0], rec[0][0]) and torch.equal(back[1][0], rec[1][0])
    assert isinstance(back[1], tuple)


def test_random_pipelines_are_refused_naming_the_transform(repo):
    cfg = Config.fromfile(str(repo / STUDENT))
    check_deterministic(cfg, STUDENT)  # the tiny pipelines are deterministic
    pipe = list(cfg.train_dataloader.dataset.pipeline)
    assert random_transforms(pipe + [dict(type='RandomFlip', prob=0.0)], keyed=False) == []
    # flips and random scales are in the image key (accepted), unless keyed=False
    assert random_transforms(pipe + [dict(type='RandomFlip', prob=0.5)]) == []
    assert random_transforms(pipe + [dict(type='RandomFlip', prob=0.5)], keyed=False) == [
        '4: RandomFlip']
    assert random_transforms([dict(type='RandomChoiceResize', scales=[(1, 1)])],
                             keyed=False) == ['0: RandomChoiceResize']
    assert random_transforms([dict(type='PhotoMetricDistortion')]) == [
        '0: PhotoMetricDistortion']
    cfg.train_dataloader.dataset.pipeline = pipe + [dict(type='PhotoMetricDistortion')]
    wrapped = Config(dict(train_dataloader=dict(dataset=dict(
        type='RepeatDataset', times=2, dataset=cfg.train_dataloader.dataset))))
    for c, field in ((cfg, 'dataset'), (wrapped, 'dataset.dataset')):
        with pytest.raises(TeacherCacheError, match=rf"student.py: .* train_dataloader\.{field}"
                                                    rf"\.pipeline has the random transform\(s\) "
                                                    rf"\['4: PhotoMetricDistortion'\]"):
            check_deterministic(c, 'student.py')
    batch = Config(dict(model=dict(data_preprocessor=dict(
        batch_augments=[dict(type='BatchSyncRandomResize')]))))
    with pytest.raises(TeacherCacheError, match=r'model\.data_preprocessor\.batch_augments has '
                                                r'.*BatchSyncRandomResize'):
        check_deterministic(batch, 'student.py')


def test_the_cache_folder_is_keyed_by_what_makes_the_teacher_input(repo):
    """Checkpoint, teacher config, dataset and pipeline, the run's own preprocessor (inside
    the graph's architecture), AMP and the storage dtype; not a subset's indices."""
    cfg = build_distill_config(str(repo / STUDENT), 'kd', str(repo / TEACHER),
                               str(repo / SHIPPED))

    env = dict(torch='2', mmdet='3.3.0', device='cpu')

    def key(c, sha='a' * 64, fp16=False, **kw):
        return teacher_key(sha, *key_parts(c), fp16, dict(env, **kw))

    base = key(cfg)
    assert key(cfg.copy()) == base
    changed = [key(cfg, sha='b' * 64), key(cfg, fp16=True), key(cfg, torch='3'),
               key(cfg, mmdet='3.3.1'), key(cfg, device='cuda')]
    for edit in ('model.architecture.data_preprocessor.mean', 'model.teacher.neck.out_channels',
                 'train_dataloader.dataset.pipeline', 'optim_wrapper.type',
                 'train_dataloader.dataset.seed'):
        c = Config(copy.deepcopy(cfg.to_dict()))
        value = {'model.architecture.data_preprocessor.mean': [0.0, 0.0, 0.0],
                 'model.teacher.neck.out_channels': 64,
                 'train_dataloader.dataset.pipeline': [dict(type='LoadImageFromFile')],
                 'optim_wrapper.type': 'AmpOptimWrapper',
                 'train_dataloader.dataset.seed': 1}[edit]
        c.merge_from_dict({edit: value})
        changed.append(key(c))
    assert len({base, *changed}) == len(changed) + 1
    c = Config(copy.deepcopy(cfg.to_dict()))
    c.merge_from_dict({'train_dataloader.dataset.indices': 32})
    assert key(c) == base
    assert osp.basename(TeacherCache(base, {}, '/x').directory) == base[:24]


#: The metainfo every image key needs besides the image's identity.
_SHAPES = {SOURCE_FIELD: 'src', 'img_shape': (4, 5), 'batch_input_shape': (4, 5)}


class _Mixed(torch.nn.Module):
    """A tapped module whose record mixes float16, float32 and integer tensors (as a head under
    AMP: float16 class scores, float32 box predictions)."""

    def forward(self, x):
        return [x.half(), x * 2], (x.long(), )


def _mixed_manager(model):
    from mmengine.registry import DefaultScope
    from mmrazor.models.task_modules.recorder import RecorderManager
    with DefaultScope.overwrite_default_scope('mmrazor'):
        manager = RecorderManager(dict(out=dict(type='ModuleOutputs', source='mixed')))
    manager.initialize(model)
    return manager


@pytest.mark.parametrize('fp16', [False, True])
def test_each_tensor_comes_back_in_its_own_dtype(tmp_path, fp16):
    model = torch.nn.Module()
    model.mixed = _Mixed()
    manager = _mixed_manager(model)
    samples = [DetDataSample(metainfo=dict(img_id=i, img_path=f'/none/{i}.jpg', **_SHAPES))
               for i in range(3)]
    x = torch.randn(3, 4, 5) * 100
    with manager:
        model.mixed(x)
    recorded = manager.get_recorder('out').data_buffer
    cache = TeacherCache('k' * 64, dict(out={}), str(tmp_path), fp16=fp16, num_images=3)
    cache.store(manager, cache.image_keys(samples))
    for source in (cache, TeacherCache('k' * 64, dict(out={}), str(tmp_path), fp16=fp16)):
        back = source.load(source.image_keys(samples))['out']
        got, want = back[0], recorded[0]
        assert [t.dtype for t in (*got[0], *got[1])] == [torch.float16, torch.float32,
                                                         torch.int64]
        assert torch.equal(got[1][0], want[1][0])  # integers exact
        if fp16:  # float16 rounding of the float32 tensor only
            torch.testing.assert_close(got[0][1], want[0][1], rtol=1e-3, atol=0)
        else:
            assert torch.equal(got[0][1], want[0][1])
        assert torch.equal(got[0][0], want[0][0])


def test_records_that_are_not_per_image_and_images_without_identity_are_refused():
    model = torch.nn.Module()
    model.mixed = _Mixed()
    manager = _mixed_manager(model)
    with manager:
        model.mixed(torch.randn(6, 2))  # 6 rows for a batch of 3 images
    cache = TeacherCache('k' * 64, dict(out={}), None, num_images=3)
    samples = [DetDataSample(metainfo=dict(img_id=i, **_SHAPES)) for i in range(3)]
    with pytest.raises(TeacherCacheError, match=r"tap 'out' recorded tensors of shapes "
                                                r"\[\(6, 2\)"):
        cache.store(manager, cache.image_keys(samples))
    with pytest.raises(TeacherCacheError, match='neither img_path nor img_id'):
        image_key(dict(img_shape=(4, 4)))


def test_weights_digest_covers_buffers_of_every_shape():
    from mmcv.cnn import ConvModule
    a = ConvModule(3, 4, 3, norm_cfg=dict(type='BN'))  # num_batches_tracked: a 0-dim buffer
    b = copy.deepcopy(a)
    assert weights_digest(a) == weights_digest(b)
    with torch.no_grad():
        b.bn.running_mean[0] += 1
    assert weights_digest(a) != weights_digest(b)


def test_the_environment_names_the_libraries_the_device_and_the_distill_code(run):
    model, _ = run
    env = environment(model.teacher)
    assert {'torch', 'mmcv', 'mmdet', 'mmengine', 'mmrazor', 'distill', 'cv2',
            'device', 'distill_code'} <= set(env)
    assert env['device'] == next(model.teacher.parameters()).device.type
