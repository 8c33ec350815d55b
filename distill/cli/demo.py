"""`make demo`: train the tiny GFL baseline on the embedded ``digits-scenes`` and print COCO AP.

Usage::

    python tools/demo.py [--quick] [--work-dir work_dirs/demo]

``--quick`` trains one short epoch on a subset (a smoke test, seconds to a minute); the full demo
runs the config's schedule. The dataset is generated into the cache on first use.
"""

from __future__ import annotations

import argparse
import os.path as osp
import time

from distill.cli import test as test_cli
from distill.cli import train as train_cli
from distill.cli.common import coco_row, format_coco_table

CONFIG = 'configs/tiny/gfl_s_digits.py'
QUICK_OPTIONS = {
    'train_dataloader.dataset.indices': 32,
    'val_dataloader.dataset.indices': 16,
    'test_dataloader.dataset.indices': 16,
    'train_cfg.max_epochs': 1,
    'train_cfg.val_interval': 1,
    'train_dataloader.num_workers': 0,
    'train_dataloader.persistent_workers': False,
    'val_dataloader.num_workers': 0,
    'val_dataloader.persistent_workers': False,
    'test_dataloader.num_workers': 0,
    'test_dataloader.persistent_workers': False,
    'default_hooks.logger.interval': 1,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='a few iterations (smoke test)')
    parser.add_argument('--work-dir', default=None)
    parser.add_argument('--config', default=CONFIG)
    args = parser.parse_args(argv)
    work_dir = args.work_dir or ('work_dirs/demo-quick' if args.quick else 'work_dirs/demo')
    work_dir = osp.join(work_dir, osp.splitext(osp.basename(args.config))[0])
    options = dict(QUICK_OPTIONS) if args.quick else {}

    t0 = time.time()
    train_args = train_cli.parse_args([args.config, '--work-dir', work_dir])
    train_args.cfg_options = options
    runner = train_cli.build_runner(train_args)
    runner.train()
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    metrics = test_cli.evaluate(args.config, checkpoint, osp.join(work_dir, 'test'), options)
    name = osp.splitext(osp.basename(args.config))[0]
    print(f'\nCOCO bbox AP on digits-scenes val ({name}, {checkpoint}, '
          f'{time.time() - t0:.0f} s wall):')
    print(format_coco_table({f'{name} (baseline)': coco_row(metrics)}), flush=True)
    if args.quick:
        print('(--quick: 4 iterations on 32 images, a smoke test of the pipeline; AP near 0 is '
              'expected. `make demo` trains the full schedule.)')


if __name__ == '__main__':
    main()
