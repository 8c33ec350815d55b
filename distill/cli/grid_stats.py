"""Training dynamics of a ``compare.py`` grid, per recipe: gradient norms, clipping, loss scales.

Usage::

    python tools/grid_stats.py WORK_ROOT [--recipes none kd ...] [--clip 10]

For each recipe (a folder ``<WORK_ROOT>/<recipe>/seed<k>`` with a finished or running run), over
its seeds' logged train records (``LogProcessor`` windows of 20 iterations): the median
gradient norm, the share of windows whose mean norm is above the run's gradient clip
(``--clip``, or ``optim_wrapper.clip_grad.max_norm`` of the config dumped in the run's folder;
runs archived by ``tools/archive_runs.sh`` keep no config), and the mean
of every ``loss*`` key in the first and the last epoch (the student's own losses and one
``loss_<edge>`` per distillation edge). These are the measurements behind a grid's diagnosis
(why a method helps less than another): whether clipping scales every term's gradient down,
which term dominates the total, whether the student's own losses end lower.
"""

from __future__ import annotations

import argparse
import glob
import os.path as osp
import statistics

from distill.cli.common import cli, read_config
from distill.curves import read_scalars
from distill.errors import ConfigError


def clip_of(run: str) -> float | None:
    """The gradient clip of a run (from the config its runner dumped), None without one."""
    configs = sorted(glob.glob(osp.join(run, '*.py')))
    if not configs:
        raise ConfigError(f'{run}: no dumped config (*.py) in the run folder to read its '
                          f'gradient clip from (an archived run?): give --clip')
    clip = read_config(configs[0], 'dumped run config').get('optim_wrapper', {}).get(
        'clip_grad') or {}
    return clip.get('max_norm')


def recipe_stats(runs: list[str], clip: float | None = None) -> dict:
    """The statistics of one recipe over its runs (see the module docstring)."""
    norms, above, losses = [], 0, {'first': {}, 'last': {}}
    for run in runs:
        train, _ = read_scalars(run)
        run_clip = clip if clip is not None else clip_of(run)
        run_norms = [r['grad_norm'] for r in train if 'grad_norm' in r]
        norms += run_norms
        above += sum(n > run_clip for n in run_norms) if run_clip else 0
        epochs = sorted({r['epoch'] for r in train if 'epoch' in r})
        for which, epoch in (('first', epochs[0]), ('last', epochs[-1])) if epochs else ():
            for r in (r for r in train if r.get('epoch') == epoch):
                for k, v in r.items():
                    if k.startswith('loss'):
                        losses[which].setdefault(k, []).append(v)
    mean = {w: {k: statistics.fmean(v) for k, v in d.items()} for w, d in losses.items()}
    return dict(runs=len(runs), median_norm=statistics.median(norms) if norms else None,
                above_clip=above / len(norms) if norms else None, losses=mean)


def table(work_root: str, recipes: list[str] | None = None, clip: float | None = None) -> str:
    """The Markdown table of a grid."""
    found = sorted({osp.basename(osp.dirname(d)) for d in
                    glob.glob(osp.join(work_root, '*', 'seed*'))})
    recipes = recipes or found
    missing = [r for r in recipes if r not in found]
    if missing:
        raise ConfigError(f'{work_root}: no runs of {missing} (found {found})')
    rows = ['| recipe | runs | median grad norm | windows above the clip | '
            'loss means, first -> last epoch |', '|---|---|---|---|---|']
    for recipe in recipes:
        s = recipe_stats(sorted(glob.glob(osp.join(work_root, recipe, 'seed*'))), clip)
        first, last = s['losses']['first'], s['losses']['last']
        terms = ', '.join(f'{k} {first[k]:.3f} -> {last[k]:.3f}' for k in last
                          if k != 'loss' and k in first)
        norm = '' if s['median_norm'] is None else f'{s["median_norm"]:.1f}'
        share = '' if s['above_clip'] is None else f'{100 * s["above_clip"]:.0f} %'
        rows.append(f'| {recipe} | {s["runs"]} | {norm} | {share} | {terms} |')
    return '\n'.join(rows)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_root', help='a compare.py --work-root')
    parser.add_argument('--recipes', nargs='+', help='default: every recipe folder')
    parser.add_argument('--clip', type=float,
                        help='the gradient clip (default: read from each run\'s dumped config)')
    args = parser.parse_args(argv)
    if not osp.isdir(args.work_root):
        raise ConfigError(f'{args.work_root}: not a directory (a compare.py --work-root)')
    out = table(args.work_root, args.recipes, args.clip)
    print(out)
    return out


cli_main = cli(main)

if __name__ == '__main__':
    cli_main()
