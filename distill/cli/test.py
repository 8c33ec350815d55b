"""Evaluate a checkpoint with mmdet's CocoMetric (pycocotools) and print the AP table.

Usage::

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out metrics.json]
        [--cfg-options k=v ...]

The checkpoint must fit the config key for key (a checkpoint of another model, or a
distillation run's checkpoint given with a plain detector config, is an error that says what to
do). ``--out`` writes strict JSON: an AP that pycocotools cannot compute (no object of that
size) is ``null``; the printed table shows it as ``n/a``.
"""

from __future__ import annotations

import argparse
import json
import os.path as osp

import distill  # noqa: F401  (compat fixes + registries)
from distill.cli.common import (
    add_cfg_options,
    check_checkpoint,
    cli,
    coco_row,
    format_coco_table,
    json_safe,
    load_config,
)
from distill.compat import atomic_write
from distill.files import check_output_path
from distill.paths import find_resource
from distill.run_record import checked_runner


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Evaluate a detector checkpoint (COCO AP).')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where the evaluation log goes')
    parser.add_argument('--out', help='write the metrics (and the AP row) to this JSON file')
    add_cfg_options(parser)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser.parse_args(argv)


def evaluate(config: str, checkpoint: str, work_dir: str | None = None,
             cfg_options: dict | None = None, launcher: str = 'none') -> dict:
    """Run the config's test loop on ``checkpoint``; returns the metrics dict.

    Raises:
        CheckpointError: the checkpoint is missing, unreadable or does not fit the config.
    """
    checkpoint = find_resource(checkpoint) or checkpoint  # e.g. the shipped checkpoints/...
    loaded = check_checkpoint(checkpoint)  # before the Runner: the error is not buried
    if work_dir is None:
        work_dir = osp.join('work_dirs', osp.splitext(osp.basename(config))[0], 'test')
    check_output_path(work_dir, 'work dir')
    cfg = load_config(config, cfg_options, work_dir)
    cfg.load_from = checkpoint
    cfg.resume = False
    cfg.launcher = launcher
    return checked_runner(cfg, loaded).test()


def main(argv=None):
    args = parse_args(argv)
    if args.out:  # before the evaluation, not after it
        check_output_path(args.out, '--out', directory=False)
    metrics = evaluate(args.config, args.checkpoint, args.work_dir, args.cfg_options,
                       args.launcher)
    row = coco_row(metrics)
    name = osp.splitext(osp.basename(args.config))[0]
    print(format_coco_table({name: row}), flush=True)
    if args.out:
        record = dict(config=args.config, checkpoint=args.checkpoint, ap=row,
                      metrics={k: float(v) for k, v in metrics.items()})
        atomic_write(json.dumps(json_safe(record), indent=2, allow_nan=False), args.out)
    return metrics


cli_main = cli(main)

if __name__ == '__main__':
    cli_main()
