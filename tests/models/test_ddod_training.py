"""DDOD's level counters through real training runs: a run killed mid-epoch and resumed ends
with the same weights and counters as an uninterrupted one, and two gloo ranks keep identical
counters that count both ranks' positives."""

import json
import os
import subprocess
import sys

import pytest
import torch
from mmengine.hooks import Hook

from distill.cli import train as train_cli
from tests.helpers import TINY_RUN

STUDENT = 'configs/tiny/ddod_s_digits.py'
COUNTERS = ('bbox_head.cls_level_pos', 'bbox_head.reg_level_pos')


class Killed(RuntimeError):
    pass


class KillAt(Hook):
    """Stops the process's training at an iteration, as a kill would (no checkpoint)."""

    def __init__(self, iteration):
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.iteration:
            raise Killed(f'killed after iteration {self.iteration}')


def _run(work, epochs, *extra, kill_at=None):
    args = train_cli.parse_args([STUDENT, '--work-dir', str(work), *extra])
    args.cfg_options = dict(TINY_RUN, **{'train_cfg.max_epochs': epochs})
    runner = train_cli.build_runner(args)
    if kill_at is not None:
        runner.register_hook(KillAt(kill_at))
    runner.train()
    return runner


def test_killed_mid_epoch_and_resumed_equals_uninterrupted(tmp_path):
    _run(tmp_path / 'straight', 2)
    # 8 images, batch 4: 2 iterations an epoch; killed after the 3rd (mid epoch 2)
    with pytest.raises(Killed):
        _run(tmp_path / 'killed', 2, kill_at=3)
    assert not (tmp_path / 'killed' / 'epoch_2.pth').exists()
    first = torch.load(tmp_path / 'killed' / 'epoch_1.pth')['state_dict']
    assert all(first[k].sum() > 0 for k in COUNTERS)  # the checkpoint holds the counters
    resumed = _run(tmp_path / 'killed', 2, '--resume')
    assert resumed.iter == 4
    a = torch.load(tmp_path / 'straight' / 'epoch_2.pth')['state_dict']
    b = torch.load(tmp_path / 'killed' / 'epoch_2.pth')['state_dict']
    for k in COUNTERS:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)
        assert (a[k] > first[k]).any()  # epoch 2 added positives to what epoch 1 saved
    for k, v in a.items():
        torch.testing.assert_close(b[k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_two_gloo_ranks_keep_identical_counters_of_both_ranks(tmp_path, repo):
    probe = tmp_path / 'probe'
    student = tmp_path / 'ddod_probe.py'
    student.write_text(
        f"_base_ = '{repo / STUDENT}'\n"
        "custom_imports = dict(imports=['distill', 'tests.ddp_probe'], "
        "allow_failed_imports=False)\n"
        f"custom_hooks = [dict(type='LevelCounterProbe', out_dir='{probe}')]\n")
    env = dict(os.environ, OMP_NUM_THREADS='1', PORT='29541',
               PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
    options = [f'{k}={v}' for k, v in TINY_RUN.items()
               if not k.startswith(('val_', 'test_', 'default_hooks.checkpoint.save'))]
    proc = subprocess.run(
        ['bash', str(repo / 'tools' / 'dist_train_distill.sh'), '2', '--student', str(student),
         '--recipe', 'none', '--work-dir', str(tmp_path / 'ddp'), '--cfg-options', *options,
         'train_cfg.max_epochs=1', 'train_dataloader.dataset.indices=16'],
        cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((probe / f'counters_rank{r}.json').read_text()) for r in (0, 1)]
    # 16 images / (2 ranks x batch 4) = 2 iterations
    assert len(ranks[0]) == len(ranks[1]) == 2
    total = {'cls': torch.zeros(3, dtype=torch.float64), 'reg': torch.zeros(3, dtype=torch.float64)}
    for s0, s1 in zip(*ranks):
        assert s0['cls'] == s1['cls'] and s0['reg'] == s1['reg']  # identical on both ranks
        for i, key in enumerate(('cls', 'reg')):
            total[key] += torch.tensor(s0['local'][i], dtype=torch.float64) + \
                torch.tensor(s1['local'][i], dtype=torch.float64)
            assert s0[key] == total[key].tolist()  # ... and they count both ranks' positives
    assert any(s0['local'] != s1['local'] for s0, s1 in zip(*ranks))  # different images
    saved = torch.load(tmp_path / 'ddp' / 'epoch_1.pth')['state_dict']
    assert saved['architecture.bbox_head.cls_level_pos'].tolist() == total['cls'].tolist()
