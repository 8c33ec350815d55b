"""Export the student of a distill run: a plain mmdet checkpoint plus its config.

Usage::

    python tools/export_student.py WORK_DIR/<name>.py WORK_DIR/epoch_6.pth OUT_PREFIX

writes ``OUT_PREFIX.pth`` and ``OUT_PREFIX.py``; then, e.g.,
``python tools/test.py OUT_PREFIX.py OUT_PREFIX.pth`` or mmdet's ``init_detector``.
"""

from __future__ import annotations

import argparse

import distill  # noqa: F401  (compat fixes + registries)
from distill.cli.common import cli
from distill.export import export_student
from distill.files import check_output_path


def main(argv=None):
    parser = argparse.ArgumentParser(description='Export the student of a distill run.')
    parser.add_argument('config', help="the run's config (written into its work dir)")
    parser.add_argument('checkpoint', help='a checkpoint of that run')
    parser.add_argument('out_prefix', help='output path without extension (.pth and .py)')
    args = parser.parse_args(argv)
    for ext in ('.pth', '.py'):
        check_output_path(args.out_prefix + ext, 'export destination', directory=False)
    ckpt, cfg = export_student(args.config, args.checkpoint, args.out_prefix)
    print(f'student checkpoint: {ckpt}\nstudent config:     {cfg}')


cli_main = cli(main)

if __name__ == '__main__':
    cli_main()
