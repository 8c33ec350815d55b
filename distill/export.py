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
    check_fits,
    distill_student_state,
    state_dict_of,
)
from distill.compat import atomic_write
from distill.config_files import read_config
from distill.errors import ConfigError


def student_config(distill_cfg: Config) -> Config:
    """The student's runnable config from a distill run's config (``model`` = the student)."""
    if distill_cfg.model.get('type') != 'DistillGraph':
        raise ConfigError(f'{distill_cfg.filename}: model.type is '
                          f'{distill_cfg.model.get("type")!r}, not DistillGraph: not a distill '
                          f'run\'s config; give the config written into the run\'s work dir')
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
    state = state_dict_of(checkpoint)
    out = distill_student_state(state)
    if not out:
        raise CheckpointError(f'checkpoint {source!r} has no {STUDENT_PREFIX!r} keys (keys look '
                              f'like {list(state)[:3]}): not a distillation run\'s checkpoint; '
                              f'a plain detector checkpoint needs no export')
    return out


def build_student(cfg: Config):
    """The student detector of a student config (built under mmdet's scope, on the CPU)."""
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg.model)


def export_student(config: str, checkpoint: str, out_prefix: str) -> tuple[str, str]:
    """Write ``<out_prefix>.pth`` (student weights) and ``<out_prefix>.py`` (its config).

    Args:
        config (str): The distill run's config (the one written to its work dir).
        checkpoint (str): A checkpoint of that run.
        out_prefix (str): Output path without extension.

    Returns:
        tuple[str, str]: The checkpoint and config paths written (atomically).
    """
    distill_cfg = read_config(config)
    ckpt = check_checkpoint(checkpoint)
    state = student_state(ckpt, checkpoint)
    cfg = student_config(distill_cfg)
    # The checkpoint must be one of this run's: the student's keys and shapes, all of them.
    check_fits(build_student(cfg).state_dict(), state, checkpoint,
               f'the student of {config}', 'student')
    meta = dict(exported_from=osp.abspath(checkpoint),
                distill=dict(distill_cfg.get('distill', {})))
    dataset_meta = (ckpt.get('meta') or {}).get('dataset_meta')
    if dataset_meta:
        meta['dataset_meta'] = dataset_meta
    buf = io.BytesIO()
    torch.save({'state_dict': state, 'meta': meta}, buf)
    ckpt_out, cfg_out = out_prefix + '.pth', out_prefix + '.py'
    atomic_write(buf.getvalue(), ckpt_out)
    atomic_write(cfg.pretty_text, cfg_out)
    return ckpt_out, cfg_out
