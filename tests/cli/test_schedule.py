"""``--epochs N`` scales every epoch count of every epoch-based scheduler (distill/cli/common.py
``scaled_schedule``, used by train, train_distill and compare), and leaves iteration-based
ones alone; the scaled values are what mmengine's schedulers then run."""

import torch
from mmengine.optim.scheduler import CosineAnnealingLR, StepLR

from distill.cli.common import load_config

SCHEDULE = """
_base_ = {base!r}
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=200),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=2, end=24, T_max=22),
    dict(type='StepLR', by_epoch=True, begin=0, end=24, step_size=8, gamma=0.5),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=24, milestones=[16, 22]),
    dict(type='PolyLR', by_epoch=True, begin=0, end=30, total_iters=12),
]
"""


def test_epochs_scale_every_scheduler_field(tmp_path, repo):
    path = tmp_path / 'schedule.py'
    path.write_text(SCHEDULE.format(base=str(repo / 'configs/tiny/gfl_s_digits.py')))
    cfg = load_config(str(path), work_dir=str(tmp_path / 'w'), epochs=6)
    assert cfg.train_cfg.max_epochs == 6
    linear, cosine, step, multi, poly = cfg.param_scheduler
    # by hand, 24 -> 6 epochs: x * 6 // 24, at least 1; max_epochs or more becomes 6
    assert (linear.begin, linear.end) == (0, 200)  # iterations: untouched
    assert (cosine.begin, cosine.end, cosine.T_max) == (1, 6, 5)  # 2 -> 0 -> 1; 22 -> 5
    assert (step.begin, step.end, step.step_size) == (0, 6, 2)
    assert (multi.end, multi.milestones) == (6, [4, 5])
    assert (poly.end, poly.total_iters) == (6, 3)  # 30 >= 24 -> 6; 12 -> 3


def test_scaled_values_are_what_mmengine_runs(tmp_path, repo):
    """The scaled StepLR halves the lr every 2 epochs and the cosine reaches its minimum at
    epoch begin + T_max = 6: the schedulers built from the scaled config, stepped per epoch."""
    path = tmp_path / 'schedule.py'
    path.write_text(SCHEDULE.format(base=str(repo / 'configs/tiny/gfl_s_digits.py')))
    cfg = load_config(str(path), work_dir=str(tmp_path / 'w'), epochs=6)
    _, cosine, step, _, _ = cfg.param_scheduler

    def lrs(scheduler_cls, options):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        options = {k: v for k, v in options.items() if k != 'type'}
        sched = scheduler_cls(opt, **options)
        out = []
        for _ in range(6):
            out.append(opt.param_groups[0]['lr'])
            opt.step()
            sched.step()
        return out

    assert lrs(StepLR, step) == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    cos = lrs(CosineAnnealingLR, cosine)
    assert cos[0] == 1.0 and cos[1] == 1.0  # begins at epoch 1
    assert cos[5] < cos[4] < cos[3] < cos[2] < 1.0
