"""Training curves: losses and validation AP per epoch, for one run and for a comparison grid.

mmengine's ``LocalVisBackend`` appends one JSON object per line to
``<work_dir>/<timestamp>/vis_data/scalars.json``, one timestamp directory per process start
(a resumed run has several). With the tiny runtime (``LogProcessor(by_epoch=True)``) the records
look like this (a real run of ``configs/tiny/gfl_s_digits.py`` on the CPU; values shortened)::

    {"base_lr": 1e-05, "lr": 1e-05, "data_time": 0.05, "grad_norm": 1.26, "loss": 2.65,
     "loss_cls": 0.0007, "loss_bbox": 1.93, "loss_dfl": 0.72, "time": 2.9, "epoch": 1,
     "iter": 1, "step": 1}
    {"coco/bbox_mAP": 0.0, "coco/bbox_mAP_50": 0.001, ..., "data_time": 0.15, "time": 5.0,
     "step": 1}

Train records are written by ``LoggerHook.after_train_iter`` with ``step`` = the global
iteration (1-based, equal to ``iter``) and ``epoch`` = the 1-based epoch; their ``loss*`` values
are the log processor's running means over its ``window_size`` iterations, not single-batch
losses. Validation records are written by ``LoggerHook.after_val_epoch`` with ``step`` = the
number of finished epochs (the iteration for iteration-based logging). When the model made no
detection above ``score_thr`` on the whole validation set, mmdet's ``CocoMetric`` returns no
keys at all and the record holds only ``time``/``data_time``; that is an AP of 0 here, as in
:func:`distill.cli.common.coco_row`.

:class:`TrainingCurvesHook` redraws ``<work_dir>/curves.png`` after every validation and at the
end of training; ``import distill`` registers it, so a config only needs
``custom_hooks = [dict(type='TrainingCurvesHook')]``.
"""

from __future__ import annotations

import glob
import io
import json
import math
import os.path as osp
import statistics

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from distill.compat import atomic_write

__all__ = ['read_scalars', 'epoch_curves', 'plot_run_curves', 'grid_curves', 'plot_grid_curves',
           'TrainingCurvesHook']

AP_KEYS = {'AP': 'coco/bbox_mAP', 'AP50': 'coco/bbox_mAP_50'}
_NOT_METRICS = {'step', 'time', 'data_time', 'epoch', 'iter', 'memory'}


def _scalar_files(work_dir: str) -> list[str]:
    """The ``scalars.json`` files of a work dir, oldest process first (timestamp dir names)."""
    files = glob.glob(osp.join(glob.escape(work_dir), '*', 'vis_data', 'scalars.json'))
    return sorted(files, key=lambda p: osp.basename(osp.dirname(osp.dirname(p))))


def _is_train(rec: dict) -> bool:
    return 'lr' in rec or any(k.startswith('loss') for k in rec)


def _read_lines(path: str) -> list[dict]:
    """The JSON objects of one ``scalars.json``; a line cut short by a kill is skipped."""
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # the last line of a process killed while writing
                continue
            if isinstance(rec, dict) and 'step' in rec:
                records.append(rec)
    return records


def read_scalars(work_dir: str) -> tuple[list[dict], list[dict]]:
    """The train and the validation records of a work dir, over all its process starts.

    The timestamp directories are read in name (= start time) order. A process that resumes
    starts again from its checkpoint, so its first train record (step ``s0``, epoch ``e0``)
    supersedes everything the earlier processes logged from there on: their train records with
    step >= ``s0`` and their validation records with step >= ``e0`` (>= ``s0`` when the records
    carry no epoch) are dropped, whether or not the new process logs that step again. This makes
    the later record win for a step logged twice after a kill and resume, and also drops what an
    abandoned process logged past the point where its successor has got to. Inside one file a
    train step that does not increase marks such a restart too (two processes started in the same
    second share a timestamp directory).

    Args:
        work_dir (str): The run's work dir (the one holding the timestamp directories).

    Returns:
        tuple[list[dict], list[dict]]: Train records (those with ``lr`` or ``loss*`` keys) and
        validation records (the others), each sorted by ``step``.

    Raises:
        FileNotFoundError: The work dir holds no ``<timestamp>/vis_data/scalars.json``.
    """
    files = _scalar_files(work_dir)
    if not files:
        raise FileNotFoundError(
            f"no training scalars in work dir {work_dir!r}: expected "
            f"'<timestamp>/vis_data/scalars.json' (written by mmengine's LocalVisBackend once "
            f"the logger has logged; is this a work dir of a run that has started?)")
    train: dict[int, dict] = {}
    val: dict[int, dict] = {}
    for path in files:
        last_step = None  # last train step of the current process
        for rec in _read_lines(path):
            step = rec['step']
            if not _is_train(rec):
                val[step] = rec
                continue
            if last_step is None or step <= last_step:  # a process (re)starts here
                train = {s: r for s, r in train.items() if s < step}
                first_val = rec['epoch'] if 'epoch' in rec else step
                val = {s: r for s, r in val.items() if s < first_val}
            train[step] = rec
            last_step = step
    return ([train[s] for s in sorted(train)], [val[s] for s in sorted(val)])


def _train_epoch(rec: dict, iters_per_epoch: int | None) -> int:
    if 'epoch' in rec:
        return int(rec['epoch'])
    if iters_per_epoch:
        return math.ceil(rec['step'] / iters_per_epoch)
    raise ValueError(
        f"train record at step {rec['step']} has no 'epoch' (an iteration-based "
        f"log_processor?); pass iters_per_epoch to derive the epoch from the step")


def _ap_percent(rec: dict, key: str) -> float:
    if key in rec:
        value = float(rec[key])
        return 100.0 * value if value >= 0 else float('nan')  # pycocotools' -1: undefined
    if not any(k not in _NOT_METRICS for k in rec):
        return 0.0  # CocoMetric's empty result: no detection above score_thr
    return float('nan')  # another evaluator's metrics


def epoch_curves(work_dir: str, iters_per_epoch: int | None = None) -> dict:
    """Per-epoch losses and validation AP of a run.

    Args:
        work_dir (str): The run's work dir.
        iters_per_epoch (int, optional): Only needed when the train records carry no ``epoch``
            (iteration-based log processor): the epoch of a record is then
            ``ceil(step / iters_per_epoch)``.

    Returns:
        dict: ``{'epochs': [e, ...], 'losses': {name: [...]}, 'val_epochs': [...],
        'val': {'AP': [...], 'AP50': [...]}}``. ``losses`` holds every key starting with
        ``loss``; each value is the mean over the logged train records of that epoch that have
        the key (NaN for an epoch without one). AP values are in percent (NaN where pycocotools
        reports -1; 0 for a validation without any detection).

    Raises:
        FileNotFoundError: The work dir holds no ``scalars.json``.
    """
    train, val = read_scalars(work_dir)
    by_epoch: dict[int, list[dict]] = {}
    for rec in train:
        by_epoch.setdefault(_train_epoch(rec, iters_per_epoch), []).append(rec)
    epochs = sorted(by_epoch)
    names = sorted({k for rec in train for k in rec if k.startswith('loss')},
                   key=lambda k: (k != 'loss', k))
    losses = {}
    for name in names:
        means = []
        for e in epochs:
            values = [float(r[name]) for r in by_epoch[e] if name in r]
            means.append(statistics.fmean(values) if values else float('nan'))
        losses[name] = means
    return {'epochs': epochs, 'losses': losses,
            'val_epochs': [rec['step'] for rec in val],
            'val': {name: [_ap_percent(rec, key) for rec in val]
                    for name, key in AP_KEYS.items()}}


def _figure(width: float, height: float):
    """A figure on matplotlib's Agg canvas (no pyplot state, no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format='png')
    atomic_write(buf.getvalue(), path)
    return path


def _log_scale_if_positive(ax, values) -> None:
    """Log y axis with plain tick labels (0.5, 2, ...), unless no value is positive."""
    from matplotlib.ticker import FuncFormatter

    if any(v > 0 for v in values if not math.isnan(v)):
        ax.set_yscale('log')
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f'{v:.3g}'))
        ax.yaxis.set_minor_formatter(FuncFormatter(  # label 2x and 5x of each decade only
            lambda v, _: f'{v:.3g}' if v > 0 and round(v / 10 ** math.floor(math.log10(v)))
            in (2, 5) else ''))


def _integer_epochs(*axes) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _message(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha='center', va='center', color='0.4')


def plot_run_curves(work_dir: str, out: str | None = None, title: str | None = None,
                    iters_per_epoch: int | None = None) -> str:
    """Draw the losses (left, log scale) and validation AP/AP50 (right) per epoch of a run.

    Args:
        work_dir (str): The run's work dir.
        out (str, optional): The PNG to write; ``<work_dir>/curves.png`` by default.
        title (str, optional): Figure title; the work dir's name by default.
        iters_per_epoch (int, optional): See :func:`epoch_curves`.

    Returns:
        str: The path of the PNG (written atomically).

    Raises:
        FileNotFoundError: The work dir holds no ``scalars.json``.
    """
    curves = epoch_curves(work_dir, iters_per_epoch)
    out = out or osp.join(work_dir, 'curves.png')
    fig = _figure(11, 4)
    ax_loss, ax_ap = fig.subplots(1, 2)
    epochs = curves['epochs']
    for name, values in curves['losses'].items():
        total = name == 'loss'
        ax_loss.plot(epochs, values, marker='o', ms=3, label=name, lw=2.6 if total else 1.2,
                     color='black' if total else None, zorder=3 if total else 2)
    if curves['losses']:
        _log_scale_if_positive(ax_loss, [v for vs in curves['losses'].values() for v in vs])
        ax_loss.legend(fontsize=7)
    else:
        _message(ax_loss, 'no training iteration logged yet')
    ax_loss.set_xlabel('epoch')
    ax_loss.set_ylabel('loss (mean of logged values)')
    ax_loss.set_title('training losses', fontsize=9)
    if curves['val_epochs']:
        for name, values in curves['val'].items():
            ax_ap.plot(curves['val_epochs'], values, marker='o', label=name)
        ax_ap.legend(fontsize=7)
    else:
        _message(ax_ap, 'no validation yet')
    ax_ap.set_xlabel('epoch')
    ax_ap.set_ylabel('COCO AP (%)')
    ax_ap.set_title('validation', fontsize=9)
    for ax in (ax_loss, ax_ap):
        ax.grid(True, alpha=0.3)
    _integer_epochs(ax_loss, ax_ap)
    fig.suptitle(title or osp.basename(osp.normpath(work_dir)), fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def _common(series: list[tuple[list, list]]) -> tuple[list, list[list[float]]]:
    """The x values every series has (non-NaN), and each series' values there."""
    maps = [{x: y for x, y in zip(xs, ys) if not math.isnan(y)} for xs, ys in series]
    xs = sorted(set.intersection(*(set(m) for m in maps))) if maps else []
    return xs, [[m[x] for m in maps] for x in xs]


def _mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample sd (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def grid_curves(runs: dict[str, list[str]]) -> dict[str, dict]:
    """Mean and sd over seeds of the total loss and the validation AP per epoch, per label.

    A label whose seeds ran different lengths keeps the epochs all its seeds have (with a
    non-NaN value). The sd is the sample sd, 0 for a single seed.

    Args:
        runs (dict[str, list[str]]): Label -> the work dirs of its seeds.

    Returns:
        dict[str, dict]: Label -> ``{'n', 'epochs', 'loss', 'loss_sd', 'val_epochs', 'AP',
        'AP_sd'}`` (AP in percent).

    Raises:
        FileNotFoundError: One of the work dirs holds no ``scalars.json``.
    """
    out = {}
    for label, dirs in runs.items():
        curves = [epoch_curves(d) for d in dirs]
        epochs, losses = _common([(c['epochs'], c['losses'].get('loss', [])) for c in curves])
        val_epochs, aps = _common([(c['val_epochs'], c['val']['AP']) for c in curves])
        loss_stats = [_mean_sd(v) for v in losses]
        ap_stats = [_mean_sd(v) for v in aps]
        out[label] = {'n': len(curves), 'epochs': epochs,
                      'loss': [m for m, _ in loss_stats], 'loss_sd': [s for _, s in loss_stats],
                      'val_epochs': val_epochs,
                      'AP': [m for m, _ in ap_stats], 'AP_sd': [s for _, s in ap_stats]}
    return out


def plot_grid_curves(runs: dict[str, list[str]], out: str, title: str) -> str:
    """Draw a comparison grid's curves (:func:`grid_curves`): mean ± sd over seeds per label.

    Left: the total ``loss`` per epoch (log scale) with a shaded ±sd band; right: validation AP
    per epoch with sd error bars. A label whose seeds ran different lengths is drawn over the
    epochs all its seeds have.

    Args:
        runs (dict[str, list[str]]): Label -> the work dirs of its seeds.
        out (str): The PNG to write.
        title (str): Figure title.

    Returns:
        str: ``out`` (written atomically).

    Raises:
        FileNotFoundError: One of the work dirs holds no ``scalars.json``.
    """
    stats = grid_curves(runs)
    fig = _figure(11, 4)
    ax_loss, ax_ap = fig.subplots(1, 2)
    for i, (label, s) in enumerate(stats.items()):
        color = f'C{i % 10}'
        name = f"{label} (n={s['n']})"
        if s['epochs']:
            ax_loss.plot(s['epochs'], s['loss'], marker='o', ms=3, color=color, label=name)
            ax_loss.fill_between(s['epochs'], [m - d for m, d in zip(s['loss'], s['loss_sd'])],
                                 [m + d for m, d in zip(s['loss'], s['loss_sd'])],
                                 color=color, alpha=0.2, lw=0)
        if s['val_epochs']:
            ax_ap.errorbar(s['val_epochs'], s['AP'], yerr=s['AP_sd'], marker='o', ms=4,
                           capsize=3, color=color, label=name)
    all_losses = [v for s in stats.values() for v in s['loss']]
    if all_losses:
        _log_scale_if_positive(ax_loss, all_losses)
        ax_loss.legend(fontsize=7)
    else:
        _message(ax_loss, 'no training iteration logged yet')
    if any(s['val_epochs'] for s in stats.values()):
        ax_ap.legend(fontsize=7)
    else:
        _message(ax_ap, 'no validation yet')
    ax_loss.set_xlabel('epoch')
    ax_loss.set_ylabel('total loss (mean ± sd over seeds)')
    ax_ap.set_xlabel('epoch')
    ax_ap.set_ylabel('COCO AP (%, mean ± sd over seeds)')
    for ax in (ax_loss, ax_ap):
        ax.grid(True, alpha=0.3)
    _integer_epochs(ax_loss, ax_ap)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


@HOOKS.register_module()
class TrainingCurvesHook(Hook):
    """Redraw ``<work_dir>/curves.png`` after every validation and at the end of training.

    Registered in mmengine's root ``HOOKS``, which mmdet's and mmrazor's registries have as
    parent, so ``custom_hooks=[dict(type='TrainingCurvesHook')]`` builds under either default
    scope. ``VERY_LOW`` priority puts it after ``LoggerHook`` (``BELOW_NORMAL``), whose
    ``after_val_epoch`` appends the validation record to ``scalars.json`` (open, append, close)
    before this hook's ``after_val_epoch`` reads it; the train records of the last iterations are
    appended by ``LoggerHook.after_train_iter``, long before ``after_train``. Only rank 0 draws.
    A failure to draw is logged as a warning and never stops training.
    """

    priority = 'VERY_LOW'

    def _draw(self, runner) -> None:
        if not is_main_process():
            return
        try:
            iters_per_epoch = None
            if not getattr(runner.log_processor, 'by_epoch', True):
                iters_per_epoch = len(runner.train_dataloader)
            plot_run_curves(runner.work_dir, iters_per_epoch=iters_per_epoch)
        except Exception as e:  # a plot must never stop a training
            runner.logger.warning(f'TrainingCurvesHook: could not draw the training curves of '
                                  f'{runner.work_dir}: {type(e).__name__}: {e}')

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        """Redraw once ``LoggerHook`` has logged this validation."""
        self._draw(runner)

    def after_train(self, runner) -> None:
        """Redraw at the end of training (also when the last epoch had no validation)."""
        self._draw(runner)

