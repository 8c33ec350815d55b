"""Training curves: scalars.json of resumed runs merge with the later process winning, per-epoch
means and AP percent match hand-computed values, the plots are real PNGs, and the hook draws
``curves.png`` during a real training after the logger has written each validation."""

import json
import math
import os
from pathlib import Path

import pytest
from PIL import Image

from distill.cli import train as train_cli
from distill.curves import (
    TrainingCurvesHook,
    epoch_curves,
    grid_curves,
    plot_grid_curves,
    plot_run_curves,
    read_scalars,
)
from tests.helpers import TINY_RUN

REPO = Path(__file__).resolve().parents[1]
GFL_S = str(REPO / 'configs' / 'tiny' / 'gfl_s_digits.py')
PNG = b'\x89PNG\r\n\x1a\n'

# 8 images, batch 4 -> 2 iterations per epoch; validation after every epoch.
SMALL = dict(TINY_RUN, **{
    'train_cfg.val_interval': 1, 'train_cfg.max_epochs': 2,
    'model.test_cfg.score_thr': 0.0,  # detections from epoch 1, so CocoMetric reports AP
})


def _train_rec(step, epoch, loss, cls, bbox):
    return {'lr': 1e-3, 'data_time': 0.01, 'loss': loss, 'loss_cls': cls, 'loss_bbox': bbox,
            'time': 0.5, 'epoch': epoch, 'iter': step, 'memory': 0, 'step': step}


def _val_rec(step, ap=None, ap50=None):
    rec = {'data_time': 0.01, 'time': 0.2, 'step': step}
    if ap is not None:  # None: CocoMetric's empty result (no detection)
        rec.update({'coco/bbox_mAP': ap, 'coco/bbox_mAP_50': ap50, 'coco/bbox_mAP_l': -1.0})
    return rec


def _write(work_dir: Path, timestamp: str, records, tail: str = '') -> Path:
    path = work_dir / timestamp / 'vis_data' / 'scalars.json'
    path.parent.mkdir(parents=True)
    path.write_text(''.join(json.dumps(r) + '\n' for r in records) + tail)
    return path


def _resumed_run(work_dir: Path) -> Path:
    """Epochs 1-2 and half of 3, killed; resumed from epoch_2.pth, it redoes epoch 3."""
    first = _write(work_dir, '20240101_000000', [
        _train_rec(1, 1, 4.0, 3.0, 1.0), _train_rec(2, 1, 3.0, 2.0, 1.0),
        _val_rec(1, 0.1, 0.25),
        _train_rec(3, 2, 2.5, 1.5, 1.0), _train_rec(4, 2, 1.5, 1.0, 0.5),
        _val_rec(2),                                   # no detection -> AP 0
        _train_rec(5, 3, 9.0, 6.0, 3.0), _train_rec(6, 3, 8.0, 5.0, 3.0),  # abandoned
    ], tail='{"lr": 0.001, "loss": 7.')                # the line cut by kill -9
    second = _write(work_dir, '20240101_010000', [
        _train_rec(5, 3, 1.0, 0.75, 0.25),             # step 5 again: this one wins
        _val_rec(3, 0.305, 0.5),
    ])
    # the order is the timestamp dirs' names, not the files' ages
    os.utime(first, (2_000_000_000, 2_000_000_000))
    os.utime(second, (1_000_000_000, 1_000_000_000))
    return work_dir


def test_read_scalars_later_process_wins_and_drops_abandoned_steps(tmp_path):
    train, val = read_scalars(str(_resumed_run(tmp_path / 'run')))
    assert [r['step'] for r in train] == [1, 2, 3, 4, 5]
    assert train[-1]['loss'] == 1.0  # the resumed process's record, not 9.0
    # step 6 of the killed process was past the resume point and is not the resumed run's
    assert [r['step'] for r in val] == [1, 2, 3]
    assert val[2]['coco/bbox_mAP'] == 0.305


def test_epoch_curves_hand_computed(tmp_path):
    curves = epoch_curves(str(_resumed_run(tmp_path / 'run')))
    assert curves['epochs'] == [1, 2, 3]
    assert list(curves['losses']) == ['loss', 'loss_bbox', 'loss_cls']  # total first
    # epoch 1: (4 + 3) / 2, epoch 2: (2.5 + 1.5) / 2, epoch 3: the resumed step 5 only
    assert curves['losses']['loss'] == pytest.approx([3.5, 2.0, 1.0])
    assert curves['losses']['loss_cls'] == pytest.approx([2.5, 1.25, 0.75])
    assert curves['losses']['loss_bbox'] == pytest.approx([1.0, 0.75, 0.25])
    assert curves['val_epochs'] == [1, 2, 3]
    assert curves['val']['AP'] == pytest.approx([10.0, 0.0, 30.5])  # percent
    assert curves['val']['AP50'] == pytest.approx([25.0, 0.0, 50.0])


def test_restart_inside_one_file_and_epoch_derived_from_step(tmp_path):
    # two processes started in the same second share a timestamp dir: the step goes back
    recs = [_train_rec(1, 1, 4.0, 3.0, 1.0), _train_rec(2, 1, 3.0, 2.0, 1.0),
            _train_rec(3, 2, 5.0, 4.0, 1.0), _train_rec(3, 2, 2.0, 1.0, 1.0),
            _train_rec(4, 2, 1.0, 0.5, 0.5)]
    for r in recs:
        del r['epoch']  # as an iteration-based log processor writes them
    _write(tmp_path / 'run', '20240101_000000', recs)
    with pytest.raises(ValueError, match="no 'epoch'.*iters_per_epoch"):
        epoch_curves(str(tmp_path / 'run'))
    curves = epoch_curves(str(tmp_path / 'run'), iters_per_epoch=2)
    assert curves['epochs'] == [1, 2]
    assert curves['losses']['loss'] == pytest.approx([3.5, 1.5])  # (2 + 1) / 2, not 5
    assert curves['val_epochs'] == [] and curves['val'] == {'AP': [], 'AP50': []}


def test_missing_scalars_names_the_work_dir(tmp_path):
    (tmp_path / 'empty' / '20240101_000000').mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"work dir '.*empty'.*scalars\.json"):
        plot_run_curves(str(tmp_path / 'empty'))
    assert not (tmp_path / 'empty' / 'curves.png').exists()


def _check_png(path, size=(1210, 440)):
    data = Path(path).read_bytes()
    assert data[:8] == PNG and len(data) > 1000
    with Image.open(path) as im:
        assert im.size == size  # 11 x 4 inches at 110 dpi
        im.verify()


def test_plot_run_curves_writes_png(tmp_path):
    run = _resumed_run(tmp_path / 'run')
    assert plot_run_curves(str(run)) == str(run / 'curves.png')
    _check_png(run / 'curves.png')
    # no validation yet: still a figure (with a message in the right panel)
    _write(tmp_path / 'new', '20240101_000000', [_train_rec(1, 1, 4.0, 3.0, 1.0)])
    out = plot_run_curves(str(tmp_path / 'new'), out=str(tmp_path / 'a' / 'b.png'), title='t')
    _check_png(out)
    assert not [p for p in (tmp_path / 'a').iterdir() if p.name != 'b.png']  # no temp file


def test_grid_curves_hand_computed_and_png(tmp_path):
    def seed(name, losses, aps):
        recs = []
        for e, (loss, ap) in enumerate(zip(losses, aps), 1):
            recs.append(_train_rec(e, e, loss, loss, 0.0))
            if ap is not None:
                recs.append(_val_rec(e, ap, ap))
        _write(tmp_path / name, '20240101_000000', recs)
        return str(tmp_path / name)

    runs = {'none': [seed('n0', [4.0, 2.0, 1.0], [0.1, 0.2, 0.3]),
                     seed('n1', [2.0, 1.0], [0.3, 0.4])],   # a shorter seed
            'kd': [seed('k0', [3.0, 1.5], [None, 0.5])]}     # one seed, validated at epoch 2
    stats = grid_curves(runs)
    none = stats['none']
    assert none['n'] == 2 and none['epochs'] == [1, 2] and none['val_epochs'] == [1, 2]
    assert none['loss'] == pytest.approx([3.0, 1.5])
    # sample sd of {4, 2} is sqrt(2), of {2, 1} sqrt(0.5)
    assert none['loss_sd'] == pytest.approx([math.sqrt(2), math.sqrt(0.5)])
    assert none['AP'] == pytest.approx([20.0, 30.0])
    assert none['AP_sd'] == pytest.approx([math.sqrt(200), math.sqrt(200)])
    kd = stats['kd']
    assert kd['epochs'] == [1, 2] and kd['loss_sd'] == [0.0, 0.0]
    assert kd['val_epochs'] == [2] and kd['AP'] == pytest.approx([50.0])
    out = plot_grid_curves(runs, str(tmp_path / 'grid' / 'curves.png'), 'tiny grid')
    assert out == str(tmp_path / 'grid' / 'curves.png')
    _check_png(out)


def test_hook_found_under_mmdet_and_mmrazor_scopes():
    from mmdet.registry import HOOKS as DET_HOOKS
    from mmengine.registry import HOOKS, DefaultScope
    from mmrazor.registry import HOOKS as RAZOR_HOOKS

    assert DET_HOOKS.parent is HOOKS and RAZOR_HOOKS.parent is HOOKS
    for scope, registry in (('mmdet', DET_HOOKS), ('mmrazor', RAZOR_HOOKS)):
        with DefaultScope.overwrite_default_scope(scope):
            # the Runner builds custom_hooks with mmengine's HOOKS, which switches to the scope's
            for reg in (HOOKS, registry):
                hook = reg.build(dict(type='TrainingCurvesHook'))
                assert type(hook) is TrainingCurvesHook and hook.priority == 'VERY_LOW'


class _ProbeCurvesHook(TrainingCurvesHook):
    """The real hook, also noting which validations were on disk each time it drew."""

    seen: list = []

    def _draw(self, runner):
        super()._draw(runner)
        self.seen.append(epoch_curves(runner.work_dir)['val_epochs'])


def test_hook_draws_curves_during_a_real_training(tmp_path):
    from mmengine.registry import HOOKS

    HOOKS.register_module(name='_ProbeCurvesHook', module=_ProbeCurvesHook, force=True)
    _ProbeCurvesHook.seen = []
    work_dir = tmp_path / 'run'
    args = train_cli.parse_args([GFL_S, '--work-dir', str(work_dir)])
    args.cfg_options = dict(SMALL, custom_hooks=[dict(type='_ProbeCurvesHook')])
    runner = train_cli.build_runner(args)
    names = [type(h).__name__ for h in runner.hooks]
    assert names.index('LoggerHook') < names.index('_ProbeCurvesHook')  # the logger goes first
    runner.train()
    # after each validation the hook already saw that epoch's record; once more after training
    assert _ProbeCurvesHook.seen == [[1], [1, 2], [1, 2]]
    _check_png(work_dir / 'curves.png')
    curves = epoch_curves(str(work_dir))
    assert curves['epochs'] == [1, 2] and curves['val_epochs'] == [1, 2]
    assert {'loss', 'loss_cls', 'loss_bbox', 'loss_dfl'} <= set(curves['losses'])
    for name, values in curves['losses'].items():
        assert len(values) == 2 and all(math.isfinite(v) for v in values), name
    # the means are those of the logged records: 2 per epoch (logger interval 1) ...
    train, val = read_scalars(str(work_dir))
    assert [(r['step'], r['epoch']) for r in train] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert curves['losses']['loss'] == pytest.approx(
        [(train[0]['loss'] + train[1]['loss']) / 2, (train[2]['loss'] + train[3]['loss']) / 2])
    # ... and AP is the logged CocoMetric value in percent
    assert [r['step'] for r in val] == [1, 2]
    assert curves['val']['AP'] == pytest.approx([100 * r['coco/bbox_mAP'] for r in val])
    assert curves['val']['AP50'] == pytest.approx([100 * r['coco/bbox_mAP_50'] for r in val])


def test_hook_failure_is_a_warning_not_a_crash(tmp_path):
    work_dir = tmp_path / 'run'
    args = train_cli.parse_args([GFL_S, '--work-dir', str(work_dir)])
    args.cfg_options = dict(SMALL, custom_hooks=[dict(type='TrainingCurvesHook')])
    runner = train_cli.build_runner(args)  # not started: there is no scalars.json yet
    hook = next(h for h in runner.hooks if isinstance(h, TrainingCurvesHook))
    hook.after_train(runner)
    log = next(work_dir.glob('*/*.log')).read_text()
    assert 'WARNING' in log and 'TrainingCurvesHook: could not draw' in log
    assert 'FileNotFoundError' in log and str(work_dir) in log
    assert not (work_dir / 'curves.png').exists()
