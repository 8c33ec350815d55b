"""Train a detector from an mmdet-style config with mmengine's Runner.

Usage::

    python tools/train.py configs/tiny/gfl_s_digits.py [--work-dir DIR] [--epochs N]
        [--resume [CKPT]] [--force-resume] [--seed N] [--cfg-options k=v ...]
        [--launcher pytorch]

Progress and ETA are printed by mmengine's logger; COCO AP is evaluated every ``val_interval``
epochs, and ``curves.png`` (losses and val AP per epoch) is redrawn in the work dir after each
evaluation. Checkpoints are written atomically (distill.compat), and ``--resume`` continues from
the last checkpoint of the work dir (or from the given one) at its saved iteration, after
checking that the checkpoint belongs to the same run (see :mod:`distill.run_record`).
"""

from __future__ import annotations

import argparse

import distill  # noqa: F401  (compat fixes + registries)
from distill.cli.common import add_cfg_options, add_epochs_option, cli, load_config
from distill.files import hold_work_dir, release_work_dir
from distill.run_record import check_before_run, checked_runner


def add_run_arguments(parser, default_work_dir: str, dist_script: str) -> None:
    """``--work-dir``, ``--epochs``, ``--resume``, ``--force-resume``, ``--seed``,
    ``--cfg-options``, ``--launcher``."""
    parser.add_argument('--work-dir', help=f'where logs and checkpoints go (default: '
                        f'{default_work_dir})')
    add_epochs_option(parser)
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or from the latest checkpoint in the work dir')
    parser.add_argument('--force-resume', action='store_true',
                        help='resume even if the checkpoint was trained with another model, '
                             'recipe, teacher or training data (the differences are logged)')
    parser.add_argument('--seed', type=int, help='override randomness.seed')
    add_cfg_options(parser)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help=f'job launcher (see {dist_script})')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a detector (mmdet 3.x config).')
    parser.add_argument('config', help='config file')
    add_run_arguments(parser, 'work_dirs/<config name>', 'tools/dist_train.sh')
    return parser.parse_args(argv)


def apply_run_options(cfg, args) -> dict | None:
    """Apply ``--launcher``, ``--seed`` and ``--resume`` to a loaded config, in place; check
    the checkpoint to resume or load (it exists, loads, and belongs to this run).

    Returns:
        dict | None: That checkpoint, loaded (for :func:`~distill.run_record.checked_runner`).
    """
    cfg.launcher = args.launcher
    if args.seed is not None:
        cfg.randomness = dict(cfg.get('randomness') or {}, seed=args.seed)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    custom = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') == 'TrainingCurvesHook' for h in custom):
        cfg.custom_hooks = custom + [dict(type='TrainingCurvesHook')]
    hold_work_dir(cfg.work_dir, cfg.launcher)  # a second run there is refused from here on
    return check_before_run(cfg, force=getattr(args, 'force_resume', False))


def held_runner(cfg, args):
    """:func:`apply_run_options`, then the checked Runner; the work dir is held from the
    start and released if anything fails before the Runner exists."""
    try:
        return checked_runner(cfg, apply_run_options(cfg, args))
    except BaseException:
        release_work_dir(cfg.work_dir)
        raise


def train_and_release(runner):
    """``runner.train()``, then the work dir is released (also when training fails)."""
    try:
        runner.train()
    finally:
        release_work_dir(runner.work_dir)
    return runner


def build_runner(args):
    """The configured mmengine Runner (not started); it holds its work dir."""
    return held_runner(load_config(args.config, args.cfg_options, args.work_dir, args.epochs),
                       args)


def main(argv=None):
    return train_and_release(build_runner(parse_args(argv)))


cli_main = cli(main)

if __name__ == '__main__':
    cli_main()
