"""`make demo`: the shipped teacher, the student with none / kd / ld / pkd, and their table.

Usage::

    python tools/demo.py [--quick] [--work-dir work_dirs/demo] [--teacher-ckpt CKPT]
        [--train-teacher] [--recipes none kd ld pkd] [--seeds 0] [--epochs 6]
        [--teacher-cache auto|on|off]

1. The teacher is the tiny GFL of ``configs/tiny/gfl_l_digits.py`` trained by our own
   ``tools/train.py`` (24 epochs, seed 0) and shipped in ``checkpoints/`` with its manifest
   (config, seed, command, sha256, AP); its sha256 is verified before use. ``--train-teacher``
   trains it instead (about 35 min on 2 CPU cores, once; reused from
   ``<work-dir>/teacher_train`` afterwards; an interrupted run resumes), and ``--teacher-ckpt``
   gives another one.
2. The student (``configs/tiny/gfl_s_digits.py``) is trained with each recipe for ``--epochs``
   (default 6, the schedule shortened with scaled milestones) by ``tools/compare.py``, which
   prints and writes the comparison table and curves (``<work-dir>/comparison.{md,csv,png}``,
   ``comparison_curves.png``, and ``curves.png`` in each run's directory). The runs share one
   teacher-output cache (docs/teacher_cache.md): the teacher runs on each training image
   once, in the first distillation run; the others read its outputs back.

``--quick`` runs everything for one epoch on 32 images (a smoke test of the whole pipeline,
about a minute); its AP is meaningless. The dataset is generated into the cache on first use.
"""

import argparse
import json
import os.path as osp
import subprocess
import sys
import time

from distill.cli import compare
from distill.cli.common import cli, read_config
from distill.compat import atomic_write
from distill.datasets.cache import sha256_file
from distill.errors import CheckpointError
from distill.files import check_output_path
from distill.paths import find_resource, resolve_config

STUDENT = 'configs/tiny/gfl_s_digits.py'
TEACHER = 'configs/tiny/gfl_l_digits.py'
#: The shipped teacher (trained by tools/train.py; see checkpoints/MANIFEST.json).
TEACHER_MANIFEST = 'checkpoints/MANIFEST.json'
TEACHER_NAME = 'gfl_l_digits_e24_seed0.pth'
#: none, KD and LD (the papers' comparison) and PKD, the best method of the CrossKD/PKD grid
#: (docs/comparison_digits_crosskd.md: +12.0 AP over none, 3 seeds).
DEFAULT_RECIPES = ['none', 'kd', 'ld', 'pkd']

QUICK_OPTIONS = {
    'train_dataloader.dataset.indices': 32,
    'val_dataloader.dataset.indices': 16,
    'test_dataloader.dataset.indices': 16,
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
    cmd = [sys.executable, '-m', 'distill.cli.train', resolve_config(TEACHER), '--work-dir',
           train_dir]
    if osp.isfile(osp.join(train_dir, 'last_checkpoint')):
        cmd.append('--resume')
    if options:
        cmd += options
    code = subprocess.run(cmd).returncode
    if code:
        raise compare.RunFailedError(f'teacher training failed (exit {code}); its log is in '
                                     f'{train_dir}')
    with open(osp.join(train_dir, 'last_checkpoint')) as f:
        ckpt = f.read().strip()
    atomic_write(ckpt + '\n', done)
    return ckpt


def shipped_teacher() -> str:
    """The shipped teacher checkpoint, after checking its sha256 against the manifest."""
    manifest_path = find_resource(TEACHER_MANIFEST)
    if manifest_path is None:
        raise CheckpointError(f'{TEACHER_MANIFEST} not found in the package: train a teacher '
                              f'with --train-teacher or give one with --teacher-ckpt')
    try:
        with open(manifest_path) as f:
            entry = json.load(f)[TEACHER_NAME]
        entry['sha256']
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f'manifest {manifest_path!r} has no valid entry for '
                              f'{TEACHER_NAME!r} ({type(e).__name__}: {e}): restore it from the '
                              f'repository or use --train-teacher') from e
    path = osp.join(osp.dirname(manifest_path), TEACHER_NAME)
    if not osp.isfile(path):
        raise CheckpointError(f'shipped teacher {path!r} not found: train one with '
                              f'--train-teacher or give one with --teacher-ckpt')
    digest = sha256_file(path)
    if digest != entry['sha256']:
        raise CheckpointError(f'shipped teacher {path!r} has sha256 {digest[:16]}..., its '
                              f'manifest {manifest_path} says {entry["sha256"][:16]}...: the '
                              f'file is damaged (a git LFS pointer?); restore it from the '
                              f'repository or use --train-teacher')
    print(f'[demo] teacher: {path} (trained by tools/train.py, {entry["epochs"]} epochs, seed '
          f'{entry["seed"]}, val AP {entry["val_AP"]}; sha256 verified)', flush=True)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='one epoch on 32 images (smoke test)')
    parser.add_argument('--work-dir', default=None)
    parser.add_argument('--teacher-ckpt', help='use this teacher instead of the shipped one')
    parser.add_argument('--train-teacher', action='store_true',
                        help='train the teacher (about 35 min on 2 cores) instead of using the '
                             'shipped checkpoint')
    parser.add_argument('--recipes', nargs='+', default=DEFAULT_RECIPES,
                        help='default: %(default)s')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0])
    parser.add_argument('--epochs', type=int, default=6, help='student schedule (epochs)')
    parser.add_argument('--teacher-cache', choices=['auto', 'on', 'off'], default='auto',
                        help='share a teacher-output cache between the runs (default: auto)')
    args = parser.parse_args(argv)
    work_dir = args.work_dir or ('work_dirs/demo-quick' if args.quick else 'work_dirs/demo')
    check_output_path(work_dir, 'work dir')
    options = ['--epochs', '1', '--cfg-options'] + [f'{k}={v}' for k, v in
                                                    QUICK_OPTIONS.items()] if args.quick else []

    t0 = time.time()
    if args.teacher_ckpt:
        ckpt = args.teacher_ckpt
    elif args.train_teacher:
        ckpt = teacher_checkpoint(work_dir, options)
    else:
        ckpt = shipped_teacher()
    t_teacher = time.time() - t0
    full = read_config(STUDENT).train_cfg.max_epochs  # the student's own schedule
    grid = ['--student', STUDENT, '--teacher', TEACHER, '--teacher-ckpt', ckpt,
            '--recipes', *args.recipes, '--seeds', *map(str, args.seeds),
            '--work-root', work_dir, '--teacher-cache', args.teacher_cache,
            '--title', f'digits-scenes val: tiny GFL R50 teacher -> R18 student, '
                       f'{1 if args.quick else args.epochs} of {full} student epochs, '
                       f'{len(args.seeds)} seed(s)' + (' (--quick: smoke test)' * args.quick)]
    grid += ['--epochs', '1' if args.quick else str(args.epochs)]
    if not args.quick:  # AP every 2 epochs for the curves (about 8 s per evaluation)
        grid += ['--val-interval', str(min(2, args.epochs))]
    if args.quick:
        grid += options[2:]
    compare.main(grid)
    print(f'[demo] done in {time.time() - t0:.0f} s wall (teacher: {t_teacher:.0f} s)', flush=True)
    if not args.quick and args.epochs < full:
        print(f'[demo] this table is a {args.epochs}-epoch screen of a {full}-epoch schedule: at '
              f'{args.epochs} epochs it measures how fast a recipe makes the student converge as '
              f'much as what it gains at the end. The full-schedule comparison (3 seeds, paired) '
              f'is in docs/results_schedule_digits.md.', flush=True)
    if args.quick:
        print('(--quick: one epoch on 32 images, a smoke test of the pipeline; AP near 0 is '
              'expected. `make demo` runs the real thing.)')


cli_main = cli(main)

if __name__ == '__main__':
    cli_main()
