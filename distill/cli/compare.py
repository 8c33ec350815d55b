"""Run or collect a grid of distillation runs (recipes x seeds) and tabulate COCO AP.

Usage::

    python tools/compare.py --student configs/tiny/gfl_s_digits.py \\
        --teacher configs/tiny/gfl_l_digits.py --teacher-ckpt work_dirs/.../epoch_24.pth \\
        --recipes none kd ld ld_vlr kd_ld_vlr --seeds 0 1 2 --epochs 6 \\
        --work-root work_dirs/compare/digits [--collect-only] [--teacher-cache auto|on|off]
        [--cfg-options k=v ...]

Each run trains in its own process (``tools/train_distill.py``) into
``<work-root>/<recipe>/seed<k>``; a finished run (``final_metrics.json``) is reused and an
interrupted one resumes from its last checkpoint. The teacher is evaluated once. Writes
``<work-root>/comparison.{md,csv,png}``: mean and sample std over seeds of AP .. APl, the
difference to ``none`` and that difference in units of the standard deviation of a difference
of two runs, ``sqrt(sd_recipe^2 + sd_none^2)``.

The runs that read a teacher share one teacher-output cache (``--teacher-cache``, default
``auto``: on where the student's train pipeline has no random transform): the teacher runs on
each image once for the whole grid (docs/teacher_cache.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import os.path as osp
import statistics
import subprocess
import sys
import time

from distill.cli.common import (
    COCO_KEYS,
    COCO_NAMES,
    add_cfg_options,
    cli,
    coco_row,
    read_config,
)
from distill.cli.common import scaled_schedule as common_scaled_schedule
from distill.cli.train_distill import recipe_name
from distill.compat import atomic_write
from distill.curves import plot_grid_curves, read_scalars
from distill.errors import DistillError
from distill.files import UnreadableFileError, hold_work_dir, read_json, release_work_dir
from distill.graph.teacher_cache import TeacherCacheError
from distill.graph.teacher_cache_hook import check_deterministic


class RunFailedError(DistillError):
    """A training or evaluation run of the grid failed; the message ends with its error."""


def _tool(name: str) -> list[str]:
    """The command that runs a tool in a child process (the installed package, any cwd)."""
    return [sys.executable, '-m', f'distill.cli.{name}']


def _failure(what: str, code: int, log: str) -> RunFailedError:
    """The error of a failed child run, with the last line the child printed."""
    with open(log, errors='replace') as f:
        lines = [line.strip() for line in f if line.strip()]
    last = lines[-1] if lines else '(no output)'
    return RunFailedError(f'{what} failed (exit {code}): {last} (full log: {log})')


def scaled_schedule(student: str, epochs: int) -> dict:
    """``--cfg-options`` that shorten the student's schedule to ``epochs`` (milestones scaled;
    see :func:`distill.cli.common.scaled_schedule`, which ``--epochs`` of the tools applies)."""
    return common_scaled_schedule(read_config(student), epochs)


def last_val_metrics(work_dir: str) -> dict | None:
    """The last validation record (``coco/*`` keys and its ``step``) logged in a work dir.

    Read by :func:`distill.curves.read_scalars`, which merges a resumed run's logs (the later
    process's record of an epoch wins); None when nothing with COCO metrics was logged.
    """
    try:
        _, val = read_scalars(work_dir)
    except FileNotFoundError:
        return None
    records = [r for r in val if 'coco/bbox_mAP' in r]
    return records[-1] if records else None


def run_dir(work_root: str, recipe: str, seed: int) -> str:
    """``<work_root>/<recipe name>/seed<k>`` (a recipe file counts by its base name)."""
    return osp.join(work_root, recipe_name(recipe), f'seed{seed}')


def coco_zeros() -> dict:
    """The metrics of a model without any detection (AP 0 in every column)."""
    return {f'coco/{k}': 0.0 for k in COCO_KEYS} | {'no_detections': True}


def _option_value(value) -> str:
    """How mmengine's ``DictAction`` reads ``value`` back from the child's command line."""
    if value is None:
        return 'None'  # json's 'null' would reach the config as the string 'null'
    if isinstance(value, (list, tuple)):
        inner = ','.join(_option_value(v) for v in value)
        return f'[{inner}]' if isinstance(value, list) else f'({inner},)'
    return json.dumps(value).replace(' ', '')


def _options_args(options: dict) -> list[str]:
    return [f'{k}={_option_value(v)}' for k, v in options.items()]


def run_one(args, recipe: str, seed: int, options: dict) -> dict:
    """Train one (recipe, seed) unless it has finished; returns its ``coco/*`` metrics."""
    work_dir = run_dir(args.work_root, recipe, seed)
    final = osp.join(work_dir, 'final_metrics.json')
    if osp.isfile(final):
        return read_json(final, 'finished run\'s metrics')
    os.makedirs(work_dir, exist_ok=True)
    cmd = _tool('train_distill') + ['--student', args.student, '--recipe', recipe,
                                    '--work-dir', work_dir, '--seed', str(seed)]
    if args.epochs:
        cmd += ['--epochs', str(args.epochs)]
    if recipe != 'none' and args.teacher:  # (self-distillation recipes need no teacher)
        cmd += ['--teacher', args.teacher, '--teacher-ckpt', args.teacher_ckpt]
        if args.teacher_cache == 'on':
            cmd += ['--teacher-cache']
    if osp.isfile(osp.join(work_dir, 'last_checkpoint')):
        cmd += ['--resume']
    cmd += ['--cfg-options'] + _options_args(options)
    t0 = time.time()
    with open(osp.join(work_dir, 'train.log'), 'a') as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise _failure(f'run {recipe} seed {seed}', proc.returncode,
                       osp.join(work_dir, 'train.log'))
    metrics = last_val_metrics(work_dir)
    if metrics is None:
        # mmdet's CocoMetric logs nothing when the model made no detection at all: AP 0.
        print(f'[compare]   {recipe} seed {seed}: no detection above score_thr on the whole '
              f'val set; counted as AP 0', flush=True)
        metrics = coco_zeros()
    metrics['wall_s'] = round(time.time() - t0, 1)
    atomic_write(json.dumps(metrics, indent=2), final)
    return metrics


def cache_mode(args, options: dict) -> str:
    """``'on'`` or ``'off'``: ``auto`` is on unless the student's train pipeline is random
    (``on`` with a random one is refused here, before any run)."""
    if args.teacher_cache == 'off' or not args.teacher:
        return 'off'
    cfg = read_config(args.student)
    cfg.merge_from_dict({k: v for k, v in options.items() if k.startswith('train_dataloader')})
    try:
        check_deterministic(cfg, args.student)
    except TeacherCacheError as e:
        if args.teacher_cache == 'on':
            raise
        print(f'[compare] teacher cache off: {e}', flush=True)
        return 'off'
    print('[compare] teacher cache on: the teacher runs once per image for the whole grid '
          '(--teacher-cache off to disable)', flush=True)
    return 'on'


def teacher_metrics(args, options: dict) -> dict | None:
    if not args.teacher or not args.teacher_ckpt:
        return None
    out = osp.join(args.work_root, 'teacher', 'metrics.json')
    if not osp.isfile(out):
        os.makedirs(osp.dirname(out), exist_ok=True)
        # the teacher is scored where the students are validated: their val_* options
        keep = {'test_' + k[len('val_'):]: v for k, v in options.items()
                if k.startswith(('val_dataloader.', 'val_evaluator.'))}
        cmd = _tool('test') + [args.teacher, args.teacher_ckpt, '--work-dir',
                               osp.dirname(out), '--out', out]
        if keep:
            cmd += ['--cfg-options'] + _options_args(keep)
        log_path = osp.join(osp.dirname(out), 'test.log')
        with open(log_path, 'a') as log:
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
        if code:
            raise _failure('teacher evaluation', code, log_path)
    metrics = read_json(out, 'teacher metrics')
    if not isinstance(metrics, dict) or not isinstance(metrics.get('metrics'), dict):
        raise UnreadableFileError(f'teacher metrics {out!r} hold no "metrics" object: delete '
                                  f'the file to evaluate the teacher again')
    return metrics['metrics']


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample sd of the non-NaN values (NaN where undefined)."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return float('nan'), float('nan')
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else float('nan')


def summarise(results: dict[str, list[dict]]) -> dict[str, dict]:
    """Per recipe: ``n``, ``<metric>`` mean and ``<metric>_sd`` over seeds (percent)."""
    out = {}
    for recipe, runs in results.items():
        rows = [coco_row(r) for r in runs]
        summary = {'n': len(rows)}
        for name in COCO_NAMES:
            summary[name], summary[f'{name}_sd'] = _mean_std([r[name] for r in rows])
        out[recipe] = summary
    return out


def _fmt(mean: float, sd: float) -> str:
    if math.isnan(mean):
        return 'n/a'
    return f'{mean:.1f}' if math.isnan(sd) else f'{mean:.1f} ± {sd:.1f}'


def write_tables(summary: dict, teacher: dict | None, prefix: str, title: str) -> str:
    """Write ``prefix.md``/``.csv``/``.png``; returns the Markdown table."""
    base = summary.get('none')
    head = ['model', 'seeds'] + list(COCO_NAMES) + ['ΔAP vs none', 'Δ / sd']
    lines = [f'**{title}**', '', '| ' + ' | '.join(head) + ' |',
             '|' + '|'.join(['---'] * len(head)) + '|']
    csv_rows = []
    if teacher is not None:
        row = coco_row(teacher)
        lines.append('| teacher | 1 | ' + ' | '.join(_fmt(row[k], float('nan'))
                                                    for k in COCO_NAMES) + ' | | |')
        csv_rows.append(dict(model='teacher', seeds=1, **row))
    for recipe, s in summary.items():
        delta = z = ''
        if base is not None and recipe != 'none':
            d = s['AP'] - base['AP']
            sd = math.sqrt((s['AP_sd'] ** 2 if s['n'] > 1 else 0)
                           + (base['AP_sd'] ** 2 if base['n'] > 1 else 0))
            delta = f'{d:+.1f}'
            z = f'{d / sd:+.1f}' if sd > 0 else 'n/a'
        label = 'student (none)' if recipe == 'none' else f'student + {recipe}'
        lines.append(f'| {label} | {s["n"]} | '
                     + ' | '.join(_fmt(s[k], s[f'{k}_sd']) for k in COCO_NAMES)
                     + f' | {delta} | {z} |')
        csv_rows.append(dict(model=recipe, seeds=s['n'],
                             **{k: s[k] for k in COCO_NAMES},
                             **{f'{k}_sd': s[f'{k}_sd'] for k in COCO_NAMES}))
    table = '\n'.join(lines) + '\n'
    with open(prefix + '.md', 'w') as f:
        f.write(table)
    fields = ['model', 'seeds'] + list(COCO_NAMES) + [f'{k}_sd' for k in COCO_NAMES]
    with open(prefix + '.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in csv_rows:
            writer.writerow({k: (f'{v:.2f}' if isinstance(v, float) else v)
                             for k, v in row.items()})
    _bar_chart(summary, teacher, prefix + '.png', title)
    return table


def _bar_chart(summary: dict, teacher: dict | None, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = list(summary)
    means = [summary[n]['AP'] for n in names]
    sds = [0 if math.isnan(summary[n]['AP_sd']) else summary[n]['AP_sd'] for n in names]
    fig, ax = plt.subplots(figsize=(1.4 * len(names) + 2, 3.6), dpi=120)
    ax.bar(names, means, yerr=sds, capsize=4, color='#4c72b0')
    if teacher is not None:
        ax.axhline(coco_row(teacher)['AP'], color='#c44e52', ls='--', label='teacher')
        ax.legend(loc='lower right')
    lo = min(means) - 3 * max(sds + [1.0])
    ax.set_ylim(max(0.0, lo), None)
    ax.set_ylabel('COCO AP (mean ± sd over seeds)')
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Run/collect a recipes x seeds grid.')
    parser.add_argument('--student', required=True, help='student config (mmdet detector)')
    parser.add_argument('--teacher', help='teacher config; needed by every recipe that reads a '
                                          'teacher (not none, not sdr)')
    parser.add_argument('--teacher-ckpt', help='teacher weights (path or URL)')
    parser.add_argument('--recipes', nargs='+', default=['none', 'kd', 'ld', 'ld_vlr',
                                                          'kd_ld_vlr'],
                        help='recipe names from configs/recipes or recipe files '
                             '(default: %(default)s)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2],
                        help='one run per recipe and seed (default: %(default)s)')
    parser.add_argument('--epochs', type=int,
                        help='shorten the student schedule (milestones scaled)')
    parser.add_argument('--val-interval', type=int,
                        help='evaluate every K epochs (default: only the last epoch when '
                             '--epochs is given, else the config\'s val_interval)')
    parser.add_argument('--work-root', required=True,
                        help='runs go to WORK_ROOT/<recipe>/seed<k>; finished runs are reused, '
                             'unfinished ones resumed; the tables are written here')
    parser.add_argument('--title', default=None, help='first line of the Markdown table')
    parser.add_argument('--collect-only', action='store_true',
                        help='only tabulate finished runs (none is trained)')
    parser.add_argument('--teacher-cache', choices=['auto', 'on', 'off'], default='auto',
                        help='share one teacher-output cache between the runs (auto: on '
                             'where the train pipeline has no random transform)')
    add_cfg_options(parser)
    return parser.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    hold_work_dir(args.work_root)  # one grid at a time in a work root (its runs hold theirs)
    try:
        return run_grid(args)
    finally:
        release_work_dir(args.work_root)


def run_grid(args) -> str:
    """Train the missing runs of the grid, then write and return its table."""
    options = {}
    if args.val_interval or args.epochs:
        # by default only the last epoch is evaluated (evaluation is a large part of a tiny run)
        options['train_cfg.val_interval'] = args.val_interval or args.epochs
    options.update(args.cfg_options or {})
    args.teacher_cache = cache_mode(args, options)
    grid = [(r, s) for r in args.recipes for s in args.seeds]
    results: dict[str, list[dict]] = {recipe_name(r): [] for r in args.recipes}
    t_all = time.time()
    for i, (recipe, seed) in enumerate(grid, 1):
        final = osp.join(run_dir(args.work_root, recipe, seed), 'final_metrics.json')
        if args.collect_only and not osp.isfile(final):
            print(f'[compare] {recipe} seed {seed}: not finished, left out', flush=True)
            continue
        state = 'reused' if osp.isfile(final) else 'training'
        print(f'[compare] ({i}/{len(grid)}) {recipe} seed {seed}: {state} ...', flush=True)
        t0 = time.time()
        metrics = run_one(args, recipe, seed, options)
        results[recipe_name(recipe)].append(metrics)
        print(f'[compare]   AP {100 * metrics["coco/bbox_mAP"]:.1f} '
              f'({time.time() - t0:.0f} s; {time.time() - t_all:.0f} s so far)', flush=True)
    results = {r: v for r, v in results.items() if v}
    teacher = teacher_metrics(args, options)
    title = args.title or (f'{osp.basename(args.student)} on its val split, '
                           f'{len(args.seeds)} seed(s)'
                           + (f', {args.epochs} epochs' if args.epochs else ''))
    table = write_tables(summarise(results), teacher, osp.join(args.work_root, 'comparison'),
                         title)
    runs = {recipe_name(r): [run_dir(args.work_root, r, s) for s in args.seeds
                             if osp.isfile(osp.join(run_dir(args.work_root, r, s),
                                                    'final_metrics.json'))]
            for r in args.recipes}
    plot_grid_curves({k: v for k, v in runs.items() if v},
                     osp.join(args.work_root, 'comparison_curves.png'), title)
    print(table, flush=True)
    print(f'[compare] wrote {osp.join(args.work_root, "comparison")}.{{md,csv,png}} and '
          f'comparison_curves.png ({time.time() - t_all:.0f} s)', flush=True)
    return table


cli_main = cli(main)

if __name__ == '__main__':
    cli_main()
