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
of two runs, ``sqrt(sd_recipe^2 + sd_none^2)``, with its Welch 95 % interval, and the paired
difference: a seed fixes the student's initial weights and data order whatever the recipe, so
the per-seed differences to ``none`` have their own mean, sd and t interval
(:mod:`distill.cli.compare_tables`).

Several budgets (``--epochs 6 12 24``): each is its own schedule (milestones scaled) and its own
grid under ``<work-root>/e<N>/`` with its tables; a finished run of the single-budget layout
that trained N epochs is read for budget N. Then ``<work-root>/schedule.{md,csv,png}``: each
recipe's ΔAP vs ``none`` per budget and whether the shortest budget ranks the recipes as the
longest (Kendall's tau-b, the best recipe).

The runs that read a teacher share one teacher-output cache (``--teacher-cache``, default
``auto``: on where the student's train pipeline has no random transform): the teacher runs on
each image once for the whole grid (docs/teacher_cache.md).
"""

from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

from distill.cli.common import COCO_KEYS, add_cfg_options, cli, read_config
from distill.cli.common import scaled_schedule as common_scaled_schedule
from distill.cli.compare_tables import summarise, write_schedule, write_tables
from distill.cli.train_distill import recipe_name
from distill.compat import atomic_write
from distill.curves import plot_grid_curves, read_scalars
from distill.errors import DistillError
from distill.files import UnreadableFileError, hold_work_dir, read_json, release_work_dir
from distill.graph.teacher_cache import TeacherCacheError
from distill.graph.teacher_cache_hook import check_deterministic
from distill.reproduce import environment


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


def legacy_run(args, recipe: str, seed: int, epochs: int | None) -> str | None:
    """A finished run of the single-budget layout (``<work_root>/<recipe>/seed<k>``) that
    trained ``epochs`` epochs: read by a multi-budget grid instead of training it again (its
    ``epochs``, or for runs recorded before that key, the epoch of its last validation)."""
    final = osp.join(run_dir(args.work_root, recipe, seed), 'final_metrics.json')
    if epochs is None or not osp.isfile(final):
        return None
    metrics = read_json(final, 'finished run\'s metrics')
    return final if metrics.get('epochs', metrics.get('step')) == epochs else None


def run_one(args, recipe: str, seed: int, options: dict, root: str | None = None,
            epochs: int | None = None) -> dict:
    """Train one (recipe, seed) under ``root`` (default ``args.work_root``) for ``epochs``
    (default ``args.epochs``) unless it has finished; returns its ``coco/*`` metrics."""
    root = root or args.work_root
    epochs = epochs if epochs is not None else _single(args.epochs)
    work_dir = run_dir(root, recipe, seed)
    final = osp.join(work_dir, 'final_metrics.json')
    if osp.isfile(final):
        return read_json(final, 'finished run\'s metrics')
    os.makedirs(work_dir, exist_ok=True)
    cmd = _tool('train_distill') + ['--student', args.student, '--recipe', recipe,
                                    '--work-dir', work_dir, '--seed', str(seed)]
    if epochs:
        cmd += ['--epochs', str(epochs)]
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
    metrics['epochs'] = epochs
    # the student started from the seed's shared weights (distill.graph.rng): a pair with
    # the same seed's `none` run
    metrics['paired_init'] = True
    metrics['reproduce'] = environment()  # versions, threads, commit (docs/reliability.md)
    atomic_write(json.dumps(metrics, indent=2), final)
    return metrics


def _single(epochs):
    """The one budget of ``--epochs`` (None: the config's schedule, or several budgets)."""
    if isinstance(epochs, (list, tuple)):
        return epochs[0] if len(epochs) == 1 else None
    return epochs


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
    parser.add_argument('--epochs', type=int, nargs='+',
                        help='train the student for N epochs (milestones scaled); several '
                             'values: one grid per budget under WORK_ROOT/e<N>/ and a schedule '
                             'table over them (WORK_ROOT/schedule.{md,csv,png})')
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


def budgets(args) -> list[int | None]:
    """The budgets of the grid: ``--epochs`` values, or the config's schedule (None)."""
    epochs = args.epochs
    if epochs is None or epochs == []:
        return [None]
    return list(epochs) if isinstance(epochs, (list, tuple)) else [epochs]


def run_grid(args) -> str:
    """Train the missing runs of the grid (every budget), then write and return its tables."""
    plan = budgets(args)
    if len(set(plan)) != len(plan):
        raise DistillError(f'--epochs {" ".join(map(str, plan))}: a budget is given twice')
    multi = len(plan) > 1
    base_options = dict(args.cfg_options or {})
    args.teacher_cache = cache_mode(args, base_options)
    t_all = time.time()
    summaries, tables = {}, []
    for epochs in plan:
        options = {}
        if args.val_interval or epochs:
            # by default only the last epoch is evaluated (evaluation is a large part of a
            # tiny run)
            options['train_cfg.val_interval'] = args.val_interval or epochs
        options.update(base_options)
        root = osp.join(args.work_root, f'e{epochs}') if multi else args.work_root
        results = train_budget(args, epochs, root, options, multi, t_all)
        teacher = teacher_metrics(args, options)
        title = args.title or (f'{osp.basename(args.student)} on its val split, '
                               f'{len(args.seeds)} seed(s)'
                               + (f', {epochs} epochs' if epochs else ''))
        if multi and args.title:
            title = f'{args.title}, {epochs} epochs'
        os.makedirs(root, exist_ok=True)
        summary = summarise(results)
        summaries[epochs] = summary
        table = write_tables(summary, teacher, osp.join(root, 'comparison'), title)
        runs = {}
        for r in args.recipes:
            dirs = [_finished_dir(args, root, r, s, epochs, multi) for s in args.seeds]
            runs[recipe_name(r)] = [d for d in dirs
                                    if osp.isfile(osp.join(d, 'final_metrics.json'))]
        plot_grid_curves({k: v for k, v in runs.items() if v},
                         osp.join(root, 'comparison_curves.png'), title)
        print(table, flush=True)
        print(f'[compare] wrote {osp.join(root, "comparison")}.{{md,csv,png}} and '
              f'comparison_curves.png ({time.time() - t_all:.0f} s)', flush=True)
        tables.append(table)
    if multi:
        title = args.title or f'{osp.basename(args.student)}: ΔAP vs none per training budget'
        md = write_schedule(summaries, teacher, osp.join(args.work_root, 'schedule'), title)
        print(md, flush=True)
        print(f'[compare] wrote {osp.join(args.work_root, "schedule")}.{{md,csv,png}}',
              flush=True)
        tables.append(md)
    return '\n'.join(tables)


def _finished_dir(args, root, recipe, seed, epochs, multi) -> str:
    """Where a run's results are: its budget's folder, or a legacy run it reuses."""
    here = run_dir(root, recipe, seed)
    if multi and not osp.isfile(osp.join(here, 'final_metrics.json')):
        legacy = legacy_run(args, recipe, seed, epochs)
        if legacy:
            return osp.dirname(legacy)
    return here


def train_budget(args, epochs, root, options, multi, t_all) -> dict[str, dict[int, dict]]:
    """Train (or reuse) every (recipe, seed) of one budget; ``{recipe: {seed: metrics}}``."""
    grid = [(r, s) for r in args.recipes for s in args.seeds]
    results: dict[str, dict[int, dict]] = {recipe_name(r): {} for r in args.recipes}
    label = f'{epochs} epochs: ' if multi else ''
    for i, (recipe, seed) in enumerate(grid, 1):
        where = _finished_dir(args, root, recipe, seed, epochs, multi)
        final = osp.join(where, 'final_metrics.json')
        if args.collect_only and not osp.isfile(final):
            print(f'[compare] {label}{recipe} seed {seed}: not finished, left out', flush=True)
            continue
        state = ('reused' + (' (single-budget layout)' if where != run_dir(root, recipe, seed)
                             else '')) if osp.isfile(final) else 'training'
        print(f'[compare] {label}({i}/{len(grid)}) {recipe} seed {seed}: {state} ...',
              flush=True)
        t0 = time.time()
        if osp.isfile(final):
            metrics = read_json(final, 'finished run\'s metrics')
        else:
            metrics = run_one(args, recipe, seed, options, root, epochs)
        results[recipe_name(recipe)][seed] = metrics
        print(f'[compare]   AP {100 * metrics["coco/bbox_mAP"]:.1f} '
              f'({time.time() - t0:.0f} s; {time.time() - t_all:.0f} s so far)', flush=True)
    return {r: v for r, v in results.items() if v}


cli_main = cli(main)

if __name__ == '__main__':
    cli_main()
