"""The teacher-output cache never serves another teacher's, pipeline's or library's records
(issue 30), end to end through tools/train_distill.py's Runner: each test runs the hole's
scenario and shows, with the key put back as it was (monkeypatched), that the old key served
the wrong records. And a RandomFlip run trains exactly as without the cache."""

import json
import os.path as osp

import mmdet
import pytest
from mmengine.hooks import Hook

from distill.cli import train as train_cli
from distill.cli import train_distill
from distill.cli.train import held_runner, train_and_release
from distill.datasets.cache import sha256_file
from distill.graph import teacher_cache, teacher_cache_hook
from tests.helpers import TINY_RUN, save_detector_checkpoint

STUDENT = 'configs/tiny/gfl_s_digits.py'
TEACHER = 'configs/tiny/gfl_l_digits.py'


class Recorder(Hook):
    """Each step's losses and its samples' flips."""

    def __init__(self):
        self.losses, self.flips = [], []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.flips += [s.metainfo.get('flip') for s in data_batch['data_samples']]

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append({k: float(v) for k, v in outputs.items() if k.startswith('loss')})


def _args(work, ckpt, cache=None, epochs=1):
    argv = ['--student', STUDENT, '--teacher', TEACHER, '--teacher-ckpt', str(ckpt),
            '--recipe', 'kd', '--seed', '0', '--work-dir', str(work)]
    if cache is not None:
        argv += ['--teacher-cache', '--teacher-cache-dir', str(cache)]
    args = train_distill.parse_args(argv)
    args.cfg_options = dict(TINY_RUN, **{'train_cfg.max_epochs': epochs})
    return args


def _train(runner):
    """Train; (losses of each step, the cache's counts over the run or None)."""
    recorder = Recorder()
    runner.register_hook(recorder, 'LOWEST')
    train_and_release(runner)
    cache = runner.model.teacher_cache
    return recorder, (cache.totals if cache is not None else None)


def _run(work, ckpt, cache=None, epochs=1, edit=None):
    """train_distill's run, its config edited by ``edit(cfg)`` before the Runner is built."""
    args = _args(work, ckpt, cache, epochs)
    cfg = train_distill.build_distill_config(args.student, args.recipe, args.teacher,
                                             args.teacher_ckpt, args.cfg_options, args.work_dir,
                                             args.epochs)
    train_distill.apply_cache_options(cfg, args)
    if edit is not None:
        edit(cfg)
    return _train(held_runner(cfg, args))


def _rerun(dumped, work):
    """tools/train.py on a run's dumped config (its TeacherCacheHook included)."""
    return _train(train_cli.build_runner(train_cli.parse_args([str(dumped), '--work-dir',
                                                                str(work)])))


@pytest.fixture
def in_repo(repo, monkeypatch):
    monkeypatch.chdir(repo)


def test_a_replaced_checkpoint_or_library_reads_none_of_the_old_records(tmp_path, in_repo,
                                                                        monkeypatch):
    ckpt, cache = tmp_path / 'teacher.pth', tmp_path / 'cache'
    save_detector_checkpoint(TEACHER, ckpt, seed=1)
    first, counts = _run(tmp_path / 'first', ckpt, cache)
    assert counts['misses'] == 2 and counts['hits'] == 0
    dumped = tmp_path / 'first' / osp.basename(STUDENT)
    written = sha256_file(ckpt)
    same, counts = _rerun(dumped, tmp_path / 'same')
    assert counts['hits'] == 2 and same.losses == first.losses  # the same teacher: reused

    save_detector_checkpoint(TEACHER, ckpt, seed=2)  # replaced in place, same path
    assert sha256_file(ckpt) != written
    replaced, counts = _rerun(dumped, tmp_path / 'replaced')
    assert counts['hits'] == 0 and counts['misses'] == 2  # the new teacher runs
    assert [r['loss_main_kd'] for r in replaced.losses] != [r['loss_main_kd']
                                                            for r in first.losses]
    # keyed by the sha256 the config recorded (the old key), the old teacher's records come
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(teacher_cache_hook, 'checkpoint_sha256', lambda *a: written)
        _, counts = _rerun(dumped, tmp_path / 'old_key')
    assert counts['hits'] == 2

    monkeypatch.setattr(mmdet, '__version__', mmdet.__version__ + '.post1')  # another mmdet
    _, counts = _rerun(dumped, tmp_path / 'other_mmdet')
    assert counts['hits'] == 0 and counts['misses'] == 2


def _concat(cfg):
    """Two deterministic pipelines over the same 8 files (the second swaps the colour
    channels: same metainfo, another input), read in order: [A's 8, B's 8], batches of 4."""
    leaf = cfg.train_dataloader.dataset
    swapped = dict(leaf, pipeline=[leaf.pipeline[0], dict(type='Normalize', mean=[0, 0, 0],
                                                          std=[1, 1, 1], to_rgb=True),
                                   *leaf.pipeline[1:]])
    cfg.train_dataloader.dataset = dict(type='ConcatDataset', datasets=[dict(leaf), swapped])
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=False)
    cfg.train_dataloader.batch_sampler = None


def _old_image_key(meta, sources=None):
    """The image key before issue 30: no source, fields silently dropped."""
    key = {k: meta.get(k) for k in ('img_path', 'img_id', 'ori_shape', 'img_shape',
                                    'scale_factor', 'flip', 'flip_direction',
                                    'batch_input_shape', 'pad_shape') if k in meta}
    return json.dumps(key, sort_keys=True,
                      default=lambda v: v.tolist() if hasattr(v, 'tolist') else str(v))


def test_two_pipelines_over_the_same_files_never_share_records(tmp_path, in_repo, repo,
                                                               monkeypatch):
    ckpt = repo / 'checkpoints' / 'gfl_l_digits_e24_seed0.pth'
    plain, _ = _run(tmp_path / 'plain', ckpt, edit=_concat)
    cached, counts = _run(tmp_path / 'cached', ckpt, tmp_path / 'cache', edit=_concat)
    assert len(plain.losses) == 4
    assert counts['hits'] == 0 and counts['misses'] == 4  # B's batches are B's own
    assert cached.losses == plain.losses
    # keyed without the source (the old key), B's batches read A's records: wrong losses
    monkeypatch.setattr(teacher_cache, 'image_key', _old_image_key)
    old, counts = _run(tmp_path / 'old', ckpt, tmp_path / 'old_cache', edit=_concat)
    assert counts['hits'] == 2
    assert old.losses[:2] == plain.losses[:2]
    assert all(o['loss_main_kd'] != p['loss_main_kd']
               for o, p in zip(old.losses[2:], plain.losses[2:]))


def _flip(cfg):
    pipeline = cfg.train_dataloader.dataset.pipeline
    pipeline.insert(len(pipeline) - 1, dict(type='RandomFlip', prob=0.5))


def test_a_random_flip_run_with_the_cache_trains_exactly_as_without(tmp_path, in_repo, repo):
    """Each flip of an image is its own record (its key holds flip and flip_direction)."""
    ckpt = repo / 'checkpoints' / 'gfl_l_digits_e24_seed0.pth'
    plain, _ = _run(tmp_path / 'plain', ckpt, epochs=2, edit=_flip)
    assert {True, False} <= set(plain.flips)  # the images really were flipped, some of them
    cold, _ = _run(tmp_path / 'cold', ckpt, tmp_path / 'cache', epochs=2, edit=_flip)
    warm, counts = _run(tmp_path / 'warm', ckpt, tmp_path / 'cache', epochs=2, edit=_flip)
    assert counts['hits'] == 4  # the same seed: the same flips, all read back
    assert cold.flips == warm.flips == plain.flips
    assert len(plain.losses) == 4 and cold.losses == plain.losses and warm.losses == plain.losses
