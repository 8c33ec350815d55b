"""Export the student of a distill run as a plain mmdet checkpoint and config.

The exported checkpoint holds only the student's weights (the ``architecture.`` prefix of the
graph removed; no teacher, no distill losses, no optimizer) plus ``meta`` (dataset classes and
where it came from); the config is the student's own, runtime included, so mmdet's
``init_detector`` and ``tools/test.py`` use the pair as any mmdet model.
"""

from __future__ import annotations

import io
import os.path as osp

import torch
from mmengine.config import Config

from distill.checkpoint import (
    STUDENT_PREFIX,
    CheckpointError,
    check_checkpoint,
    distill_student_state,
)
from distill.compat import atomic_write


def student_config(distill_cfg: Config) -> Config:
    """The student's runnable config from a distill run's config (``model`` = the student)."""
    if distill_cfg.model.get('type') != 'DistillGraph':
        raise ValueError(f'{distill_cfg.filename}: model.type is '
                         f'{distill_cfg.model.get("type")!r}, not DistillGraph: not a distill run')
    cfg = distill_cfg.copy()
    student = dict(cfg.model.architecture)
    student.pop('_scope_', None)
    cfg.model = student
    cfg.pop('distill', None)
    for key in ('resume', 'load_from'):
        cfg[key] = None if key == 'load_from' else False
    return cfg


def student_state(checkpoint: dict, source: str = 'checkpoint') -> dict:
    """The student's ``state_dict`` from a distill checkpoint (keys ``architecture.*``)."""
    state = checkpoint.get('state_dict', checkpoint)
    out = distill_student_state(state)
    if not out:
        raise CheckpointError(f'{source}: no {STUDENT_PREFIX!r} keys: not a DistillGraph '
                              f'checkpoint (keys look like {list(state)[:3]})')
    return out


def export_student(config: str, checkpoint: str, out_prefix: str) -> tuple[str, str]:
    """Write ``<out_prefix>.pth`` (student weights) and ``<out_prefix>.py`` (its config).

    Args:
        config (str): The distill run's config (the one written to its work dir).
        checkpoint (str): A checkpoint of that run.
        out_prefix (str): Output path without extension.

    Returns:
        tuple[str, str]: The checkpoint and config paths written (atomically).
    """
    distill_cfg = Config.fromfile(config)
    ckpt = check_checkpoint(checkpoint)
    state = student_state(ckpt, checkpoint)
    meta = dict(exported_from=osp.abspath(checkpoint),
                distill=dict(distill_cfg.get('distill', {})))
    dataset_meta = (ckpt.get('meta') or {}).get('dataset_meta')
    if dataset_meta:
        meta['dataset_meta'] = dataset_meta
    buf = io.BytesIO()
    torch.save({'state_dict': state, 'meta': meta}, buf)
    ckpt_out, cfg_out = out_prefix + '.pth', out_prefix + '.py'
    atomic_write(buf.getvalue(), ckpt_out)
    atomic_write(student_config(distill_cfg).pretty_text, cfg_out)
    return ckpt_out, cfg_out
