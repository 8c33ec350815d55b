"""`make demo`: a teacher, then the student with none / kd / ld / kd_ld_vlr, and their table.

Usage::

    python tools/demo.py [--quick] [--work-dir work_dirs/demo] [--teacher-ckpt CKPT]
        [--recipes none kd ld kd_ld_vlr] [--seeds 0] [--epochs 6]

1. The tiny teacher (``configs/tiny/gfl_l_digits.py``, its full 24-epoch schedule, about 35 min
   on 2 CPU cores) is trained once into ``<work-dir>/teacher_train`` and reused afterwards
   (``--teacher-ckpt`` gives one directly). An interrupted teacher run resumes.
2. The student (``configs/tiny/gfl_s_digits.py``) is trained with each recipe for ``--epochs``
   (default 6, a short schedule with its milestones scaled) by ``tools/compare.py``, which
   prints and writes the comparison table (``<work-dir>/comparison.{md,csv,png}``).

``--quick`` runs everything for one epoch on 32 images (a smoke test of the whole pipeline,
about a minute); its AP is meaningless. The dataset is generated into the cache on first use.
"""

from __future__ import annotations

import argparse
import os.path as osp
import subprocess
import sys
import time

from distill.cli import compare
from distill.compat import atomic_write

STUDENT = 'configs/tiny/gfl_s_digits.py'
TEACHER = 'configs/tiny/gfl_l_digits.py'

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


def teacher_checkpoint(work_dir: str, options: list[str]) -> str:
    """Train the teacher once (resuming an interrupted run); returns its final checkpoint."""
    train_dir = osp.join(work_dir, 'teacher_train')
    done = osp.join(train_dir, 'DONE')
    if osp.isfile(done):
        with open(done) as f:
            ckpt = f.read().strip()
        print(f'[demo] reusing the teacher {ckpt}', flush=True)
        return ckpt
    print(f'[demo] training the teacher {TEACHER} into {train_dir} (full schedule: about 35 '
          f'min on 2 cores; done once, then reused)', flush=True)
    cmd = [sys.executable, osp.join(compare.TOOLS, 'train.py'), TEACHER, '--work-dir', train_dir]
    if osp.isfile(osp.join(train_dir, 'last_checkpoint')):
        cmd.append('--resume')
    if options:
        cmd += ['--cfg-options'] + options
    if subprocess.run(cmd).returncode:
        raise RuntimeError(f'teacher training failed (log in {train_dir})')
    with open(osp.join(train_dir, 'last_checkpoint')) as f:
        ckpt = f.read().strip()
    atomic_write(ckpt + '\n', done)
    return ckpt


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='one epoch on 32 images (smoke test)')
    parser.add_argument('--work-dir', default=None)
    parser.add_argument('--teacher-ckpt', help='use this teacher instead of training one')
    parser.add_argument('--recipes', nargs='+', default=['none', 'kd', 'ld', 'kd_ld_vlr'])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0])
    parser.add_argument('--epochs', type=int, default=6, help='student schedule (epochs)')
    args = parser.parse_args(argv)
    work_dir = args.work_dir or ('work_dirs/demo-quick' if args.quick else 'work_dirs/demo')
    options = [f'{k}={v}' for k, v in QUICK_OPTIONS.items()] if args.quick else []

    t0 = time.time()
    ckpt = args.teacher_ckpt or teacher_checkpoint(work_dir, options)
    t_teacher = time.time() - t0
    grid = ['--student', STUDENT, '--teacher', TEACHER, '--teacher-ckpt', ckpt,
            '--recipes', *args.recipes, '--seeds', *map(str, args.seeds),
            '--work-root', work_dir,
            '--title', f'digits-scenes val: tiny GFL R50 teacher -> R18 student, '
                       f'{1 if args.quick else args.epochs} student epoch(s), '
                       f'{len(args.seeds)} seed(s)' + (' (--quick: smoke test)' * args.quick)]
    grid += ['--cfg-options'] + options if args.quick else ['--epochs', str(args.epochs)]
    compare.main(grid)
    print(f'[demo] done in {time.time() - t0:.0f} s wall (teacher: {t_teacher:.0f} s)', flush=True)
    if args.quick:
        print('(--quick: one epoch on 32 images, a smoke test of the pipeline; AP near 0 is '
              'expected. `make demo` runs the real thing.)')


if __name__ == '__main__':
    main()
