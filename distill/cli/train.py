"""Train a detector from an mmdet-style config with mmengine's Runner.

Usage::

    python tools/train.py configs/tiny/gfl_s_digits.py [--work-dir DIR] [--resume [CKPT]]
        [--seed N] [--cfg-options k=v ...] [--launcher pytorch]

Progress and ETA are printed by mmengine's logger; COCO AP is evaluated every ``val_interval``
epochs. Checkpoints are written atomically (distill.compat), and ``--resume`` continues from
the last checkpoint of the work dir (or from the given one) at its saved iteration.
"""

from __future__ import annotations

import argparse

import distill  # noqa: F401  (compat fixes + registries)
from distill.cli.common import add_cfg_options, check_checkpoint, load_config


def add_run_arguments(parser, default_work_dir: str, dist_script: str) -> None:
    """``--work-dir``, ``--resume``, ``--seed``, ``--cfg-options``, ``--launcher``."""
    parser.add_argument('--work-dir', help=f'where logs and checkpoints go (default: '
                        f'{default_work_dir})')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or from the latest checkpoint in the work dir')
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


def apply_run_options(cfg, args) -> None:
    """Apply ``--launcher``, ``--seed`` and ``--resume`` to a loaded config, in place."""
    cfg.launcher = args.launcher
    if args.seed is not None:
        cfg.randomness = dict(cfg.get('randomness') or {}, seed=args.seed)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        check_checkpoint(args.resume)
        cfg.resume = True
        cfg.load_from = args.resume


def build_runner(args):
    """The configured mmengine Runner (not started)."""
    from mmengine.runner import Runner

    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    apply_run_options(cfg, args)
    return Runner.from_cfg(cfg)


def main(argv=None):
    args = parse_args(argv)
    runner = build_runner(args)
    runner.train()
    return runner


if __name__ == '__main__':
    main()
