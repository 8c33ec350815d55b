"""tools/train_distill.py --teacher-cache end to end: a cached run trains exactly as an uncached
one (every logged loss, the final weights), a second run reads the first one's files and never
runs the teacher, and a random pipeline or batch augmentation is refused before anything is
built."""

import json
import re
import subprocess
import sys

import pytest
import torch

from tests.cli.test_train_distill import ENV, OPTIONS, STUDENT, TEACHER
from tests.helpers import save_detector_checkpoint


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    return save_detector_checkpoint(TEACHER, tmp_path_factory.mktemp('t') / 'teacher.pth', 1)


def _run(repo, work, teacher_ckpt, *extra, options=()):
    cmd = [sys.executable, str(repo / 'tools' / 'train_distill.py'), '--student', STUDENT,
           '--teacher', TEACHER, '--teacher-ckpt', teacher_ckpt, '--recipe', 'kd_ld_vlr',
           '--work-dir', str(work), *extra, '--cfg-options', *OPTIONS,
           'train_cfg.max_epochs=2', *options]
    return subprocess.run(cmd, cwd=repo, env=ENV, capture_output=True, text=True, timeout=900)


def _losses(work):
    records = [json.loads(line) for p in work.glob('*/vis_data/scalars.json')
               for line in p.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k.startswith('loss')} for r in records if 'loss' in r]


def _epoch_stats(proc, epoch):
    """(batches from the cache, batches with the teacher run, files read) of one epoch."""
    m = re.search(rf'teacher cache after epoch {epoch}: (\d+) batches from the cache, (\d+) '
                  rf'with the teacher run \((\d+) files read', proc.stdout + proc.stderr)
    assert m, (proc.stdout + proc.stderr)[-3000:]
    return tuple(int(g) for g in m.groups())


def test_a_cached_run_trains_exactly_as_an_uncached_one(tmp_path, teacher_ckpt, repo):
    cache_dir = tmp_path / 'cache'
    plain = _run(repo, tmp_path / 'plain', teacher_ckpt)
    assert plain.returncode == 0, plain.stdout[-3000:] + plain.stderr[-3000:]
    cached = _run(repo, tmp_path / 'cached', teacher_ckpt, '--teacher-cache',
                  '--teacher-cache-dir', str(cache_dir))
    assert cached.returncode == 0, cached.stdout[-3000:] + cached.stderr[-3000:]
    # epoch 1 runs the teacher on every batch and fills the cache; in epoch 2 a batch is read
    # back when each of its images was met at the same padded shape (shuffled batches of 4
    # pad some images to another height: those batches run the teacher again)
    assert _epoch_stats(cached, 1) == (0, 8, 0)
    hits, misses, _ = _epoch_stats(cached, 2)
    assert hits >= 3 and hits + misses == 8
    reused = _run(repo, tmp_path / 'reused', teacher_ckpt, '--teacher-cache',
                  '--teacher-cache-dir', str(cache_dir))
    assert reused.returncode == 0, reused.stdout[-3000:] + reused.stderr[-3000:]
    hits, misses, files = _epoch_stats(reused, 1)  # the first run's files, from epoch 1 on
    assert hits >= 3 and hits + misses == 8 and files >= 4 * hits
    ref = _losses(tmp_path / 'plain')
    assert len(ref) == 16
    for work in ('cached', 'reused'):
        assert _losses(tmp_path / work) == ref, work
        a = torch.load(tmp_path / 'plain' / 'epoch_2.pth', weights_only=False)['state_dict']
        b = torch.load(tmp_path / work / 'epoch_2.pth', weights_only=False)['state_dict']
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), work


def test_a_random_pipeline_is_refused_naming_the_transform(tmp_path, teacher_ckpt, repo):
    proc = _run(repo, tmp_path / 'random', teacher_ckpt, '--teacher-cache', options=[
        'train_dataloader.dataset.pipeline.2.type=RandomCrop'])
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and 'gfl_s_digits.py' in last
    assert "train_dataloader.dataset.pipeline has the random transform(s) ['2: RandomCrop']" \
        in last
    assert not (tmp_path / 'random').exists() or not list((tmp_path / 'random').iterdir())


def test_a_random_batch_augment_of_the_student_is_refused(tmp_path, teacher_ckpt, repo):
    """train_distill's graph has no data_preprocessor of its own: the student's is used, and
    its batch_augments are read there."""
    student = tmp_path / 'student_bsrr.py'
    student.write_text(f"_base_ = ['{repo / STUDENT}']\n"
                       "model = dict(data_preprocessor=dict(batch_augments=[dict(\n"
                       "    type='BatchSyncRandomResize', random_size_range=(160, 256))]))\n")
    cmd = [sys.executable, str(repo / 'tools' / 'train_distill.py'), '--student', str(student),
           '--teacher', TEACHER, '--teacher-ckpt', teacher_ckpt, '--recipe', 'kd',
           '--work-dir', str(tmp_path / 'bsrr'), '--teacher-cache', '--cfg-options', *OPTIONS]
    proc = subprocess.run(cmd, cwd=repo, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and 'student_bsrr.py' in last
    assert ("model.architecture.data_preprocessor.batch_augments has the random (or unknown) "
            "batch augmentation(s) ['BatchSyncRandomResize']") in last
    assert not (tmp_path / 'bsrr').exists() or not list((tmp_path / 'bsrr').iterdir())
