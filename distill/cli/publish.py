"""Publish a training checkpoint: weights only, with a manifest entry (sha256, config, seed).

Usage::

    python tools/publish_checkpoint.py WORK_DIR/epoch_24.pth checkpoints/NAME.pth \\
        --config configs/tiny/gfl_l_digits.py --command "..." [--manifest checkpoints/MANIFEST.json]

As mmdet's ``publish_model.py``: the optimizer state and the message hub are dropped (a third of
the size for AdamW), ``meta`` keeps the epoch, iteration, seed, run config and dataset classes.
The manifest entry records the sha256 of the written file, the config, the seed, the number of
epochs, the command that trained it and the val metrics of that epoch (from the run's logs), so that
whoever uses the file can check it is the one described (``tools/demo.py`` does).
"""

from __future__ import annotations

import argparse
import io
import json
import os.path as osp
import platform

import mmengine
import torch

from distill.checkpoint import check_checkpoint, state_dict_of
from distill.cli.common import cli, coco_row
from distill.compat import atomic_write
from distill.datasets.cache import sha256_file
from distill.errors import CheckpointError
from distill.files import check_output_path

KEEP_META = ('epoch', 'iter', 'seed', 'cfg', 'dataset_meta', 'mmengine_version', 'time',
             'experiment_name')


def val_metrics_at(work_dir: str, epoch: int | None) -> dict | None:
    """The validation record of ``epoch`` in a run's logs (None if that epoch was not
    evaluated)."""
    from distill.curves import read_scalars

    if epoch is None:
        return None
    try:
        _, val = read_scalars(work_dir)
    except FileNotFoundError:
        return None
    records = [r for r in val if r.get('step') == epoch and 'coco/bbox_mAP' in r]
    return records[-1] if records else None


def publish(src: str, dst: str, config: str, command: str, manifest: str) -> dict:
    """Write the weights of ``src`` to ``dst`` and its entry into ``manifest``; returns it."""
    ckpt = check_checkpoint(src)
    meta = {k: v for k, v in (ckpt.get('meta') or {}).items() if k in KEEP_META}
    buf = io.BytesIO()
    torch.save({'state_dict': state_dict_of(ckpt), 'meta': meta}, buf)
    atomic_write(buf.getvalue(), dst)
    metrics = val_metrics_at(osp.dirname(osp.abspath(src)), meta.get('epoch'))
    row = coco_row(metrics) if metrics else None
    entry = dict(
        sha256=sha256_file(dst), bytes=osp.getsize(dst), config=config,
        seed=meta.get('seed'), epochs=meta.get('epoch'), iterations=meta.get('iter'),
        command=command, val_AP=round(row['AP'], 1) if row else None,
        val_metrics={k: (round(v, 1) if v == v else None) for k, v in row.items()} if row
        else None,
        trained_with=dict(torch=torch.__version__, mmengine=mmengine.__version__,
                          machine=f'{platform.machine()} CPU'),
        source=osp.basename(src))
    entries = {}
    if osp.isfile(manifest):
        try:
            with open(manifest) as f:
                entries = json.load(f)
            assert isinstance(entries, dict)
        except (ValueError, AssertionError) as e:
            raise CheckpointError(f'manifest {manifest!r} is not a JSON object of entries '
                                  f'({type(e).__name__}): fix or delete it') from e
    entries[osp.basename(dst)] = entry
    atomic_write(json.dumps(entries, indent=2, sort_keys=True) + '\n', manifest)
    return entry


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='a training checkpoint (e.g. WORK_DIR/epoch_24.pth)')
    parser.add_argument('dst', help='where the published weights go')
    parser.add_argument('--config', required=True, help='the config it was trained with')
    parser.add_argument('--command', required=True, help='the command that trained it')
    parser.add_argument('--manifest', help='default: MANIFEST.json next to dst')
    args = parser.parse_args(argv)
    manifest = args.manifest or osp.join(osp.dirname(osp.abspath(args.dst)), 'MANIFEST.json')
    check_output_path(args.dst, 'dst', directory=False)
    check_output_path(manifest, '--manifest', directory=False)
    entry = publish(args.src, args.dst, args.config, args.command, manifest)
    print(json.dumps(entry, indent=2))
    return entry


cli_main = cli(main)

if __name__ == '__main__':
    cli_main()
