"""tools/train_distill.py end to end: kill + resume, NaN stop, export round trip, 2-process DDP."""

import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from tests.ddp_probe import state_digest
from tests.helpers import export_round_trip, save_detector_checkpoint

STUDENT = 'configs/tiny/gfl_s_digits.py'
TEACHER = 'configs/tiny/gfl_l_digits.py'
# 32 images, batch 4: 8 iterations per epoch; score_thr 0 so that even a barely trained
# student has detections to compare.
OPTIONS = ['train_dataloader.dataset.indices=32', 'train_dataloader.batch_size=4',
           'val_dataloader.dataset.indices=8', 'test_dataloader.dataset.indices=8',
           'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
           'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
           'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
           'train_cfg.val_interval=100', 'default_hooks.logger.interval=1',
           'default_hooks.checkpoint.max_keep_ckpts=5', 'model.test_cfg.score_thr=0.0']
ENV = dict(os.environ, OMP_NUM_THREADS='1',
           PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")


def _cmd(repo, work, teacher_ckpt, epochs, *extra):
    return [sys.executable, str(repo / 'tools' / 'train_distill.py'), '--student', STUDENT,
            '--teacher', TEACHER, '--teacher-ckpt', teacher_ckpt, '--recipe', 'kd_ld_vlr',
            '--work-dir', str(work), *extra, '--cfg-options', *OPTIONS,
            f'train_cfg.max_epochs={epochs}']


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    return save_detector_checkpoint(TEACHER, tmp_path_factory.mktemp('t') / 'teacher.pth', 1)


@pytest.fixture(scope='module')
def straight_run(tmp_path_factory, teacher_ckpt, repo):
    """Three uninterrupted epochs."""
    work = tmp_path_factory.mktemp('straight')
    proc = subprocess.run(_cmd(repo, work, teacher_ckpt, 3), cwd=repo, env=ENV,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work


def test_killed_mid_epoch_resumes_from_last_checkpoint(tmp_path, straight_run, teacher_ckpt,
                                                       repo):
    work = tmp_path / 'killed'
    proc = subprocess.Popen(_cmd(repo, work, teacher_ckpt, 3), cwd=repo, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # kill -9 in the middle of epoch 2
        if 'Epoch(train) [2][4/8]' in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert (work / 'last_checkpoint').read_text().endswith('epoch_1.pth')
    assert not (work / 'epoch_2.pth').exists()
    epoch1 = _sha(work / 'epoch_1.pth')
    proc = subprocess.run(_cmd(repo, work, teacher_ckpt, 3, '--resume'), cwd=repo, env=ENV,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert 'resumed epoch: 1, iter: 8' in proc.stdout + proc.stderr
    assert _sha(work / 'epoch_1.pth') == epoch1  # the checkpoint it resumed from is untouched
    a = torch.load(straight_run / 'epoch_3.pth')
    b = torch.load(work / 'epoch_3.pth')
    assert a['meta']['iter'] == b['meta']['iter'] == 24
    for k, v in a['state_dict'].items():  # killed + resumed = uninterrupted
        torch.testing.assert_close(b['state_dict'][k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_nan_distill_loss_stops_and_keeps_last_checkpoint(tmp_path, straight_run, repo):
    work = tmp_path / 'nan'
    work.mkdir()
    for name in ('epoch_3.pth', 'last_checkpoint'):
        data = (straight_run / name).read_bytes()
        if name == 'last_checkpoint':
            data = str(work / 'epoch_3.pth').encode()
        (work / name).write_bytes(data)
    before = _sha(work / 'epoch_3.pth')
    bad = save_detector_checkpoint(TEACHER, tmp_path / 'nan_teacher.pth', nan_in='bbox_head')
    # another teacher than the run's: resuming needs --force-resume (it is refused without)
    proc = subprocess.run(_cmd(repo, work, bad, 4, '--resume'), cwd=repo, env=ENV,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 2 and 'teacher checkpoint: ' in proc.stderr.splitlines()[-1]
    proc = subprocess.run(_cmd(repo, work, bad, 4, '--resume', '--force-resume'), cwd=repo,
                          env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]  # our error is the last line printed
    assert last.startswith("error: distill edge(s) ['main_kd', 'main_ld', 'vlr_ld'] became "
                           "non-finite"), last
    assert _sha(work / 'epoch_3.pth') == before
    assert (work / 'last_checkpoint').read_text() == str(work / 'epoch_3.pth')
    assert not (work / 'epoch_4.pth').exists()


def test_exported_student_gives_the_same_predictions_and_ap(tmp_path, straight_run, repo):
    model, results = export_round_trip(str(straight_run / 'gfl_s_digits.py'),
                                       str(straight_run / 'epoch_3.pth'), tmp_path)
    assert type(model).__name__ == 'GFL'
    assert len(json.loads(results['graph'][1])) > 0
    assert results['graph'][1] == results['export'][1]  # identical predictions, byte for byte
    assert results['graph'][0] == results['export'][0]
    # ... and the AP equals the one logged by the validation at the end of training
    logged = [json.loads(line) for p in straight_run.glob('*/vis_data/scalars.json')
              for line in p.read_text().splitlines() if 'coco/bbox_mAP' in line]
    assert logged[-1]['coco/bbox_mAP'] == results['export'][0]['coco/bbox_mAP']


def test_crosskd_pkd_adapters_train_and_stay_out_of_the_export(tmp_path, teacher_ckpt, repo):
    """The 1x1 adapters (48 -> 96 channels) are in the run's checkpoint, not in the export,
    which loads with init_detector and predicts exactly as the graph does."""
    work = tmp_path / 'crosskd'
    cmd = _cmd(repo, work, teacher_ckpt, 1)
    cmd[cmd.index('kd_ld_vlr')] = 'crosskd+pkd'
    proc = subprocess.run(cmd, cwd=repo, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = torch.load(work / 'epoch_1.pth', weights_only=False)['state_dict']
    adapters = sorted({k.split('.')[1] for k in state if k.startswith('adapters.')})
    assert adapters == ['cross_s1_t3_cls', 'cross_s1_t3_reg', 'neck']
    model, results = export_round_trip(str(work / 'gfl_s_digits.py'),
                                       str(work / 'epoch_1.pth'), tmp_path)
    assert not any('adapter' in k for k in model.state_dict())
    assert len(json.loads(results['graph'][1])) > 0
    assert results['graph'][1] == results['export'][1]
    assert results['graph'][0] == results['export'][0]


def _student_skeleton(repo):
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    init_default_scope('mmdet')
    return MODELS.build(Config.fromfile(str(repo / STUDENT)).model)


def test_two_process_ddp_keeps_ranks_consistent(tmp_path, teacher_ckpt, repo):
    probe = tmp_path / 'probe'
    student = tmp_path / 'student_probe.py'
    student.write_text(
        f"_base_ = '{repo / STUDENT}'\n"
        "custom_imports = dict(imports=['distill', 'tests.ddp_probe'], "
        "allow_failed_imports=False)\n"
        f"custom_hooks = [dict(type='RankStateProbe', out_dir='{probe}')]\n")
    env = dict(ENV, PORT='29533')
    proc = subprocess.run(
        ['bash', str(repo / 'tools' / 'dist_train_distill.sh'), '2', '--student', str(student),
         '--teacher', TEACHER, '--teacher-ckpt', teacher_ckpt, '--recipe', 'kd_ld_vlr',
         '--work-dir', str(tmp_path / 'ddp'), '--cfg-options', *OPTIONS,
         'train_cfg.max_epochs=1', 'train_dataloader.dataset.indices=16'],
        cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((probe / f'rank{r}.json').read_text()) for r in (0, 1)]
    assert [r['world'] for r in ranks] == [2, 2]
    # 16 images / (2 ranks x batch 4) = 2 iterations, each with every edge's loss, finite
    for r in ranks:
        assert len(r['losses']) == 2 and not r['teacher_training']
        for step in r['losses']:
            for edge in ('loss_main_kd', 'loss_main_ld', 'loss_vlr_ld'):
                assert 0 < step[edge] < float('inf')
    assert ranks[0]['losses'] != ranks[1]['losses']  # each rank saw its own images ...
    assert ranks[0]['student'] == ranks[1]['student']  # ... and the parameters stayed in sync
    # (BN running statistics are per-rank buffers, as in any DDP run without SyncBN; rank 0's
    # are the ones saved)
    assert ranks[0]['teacher'] == ranks[1]['teacher']
    saved = torch.load(tmp_path / 'ddp' / 'epoch_1.pth')['state_dict']
    params = {n for n, _ in _student_skeleton(repo).named_parameters()}
    student_params = {k[len('architecture.'):]: v for k, v in saved.items()
                      if k.startswith('architecture.') and k[len('architecture.'):] in params}
    assert state_digest(student_params) == ranks[0]['student']
    assert not any(k.startswith('teacher') for k in saved)
    teacher_state = torch.load(teacher_ckpt)['state_dict']
    assert state_digest(teacher_state) == ranks[0]['teacher']  # untouched by training
