"""Loading checkpoints safely, and checking that one fits the model it is loaded into.

Every place where a checkpoint meets a config (``tools/test.py``, ``--resume``, ``load_from``,
the teacher of a distill run, the export of a student) goes through :func:`check_fits`: the
checkpoint must hold exactly the model's keys with the model's shapes. mmengine's own loading is
non-strict and only logs the keys it could not load, so a checkpoint of another model would be
evaluated or trained on with randomly initialised weights, and the run would exit 0.
"""

from __future__ import annotations

import glob
import os.path as osp

import torch
from torch import nn

from distill.errors import CheckpointError

__all__ = ['CheckpointError', 'STUDENT_PREFIX', 'check_checkpoint', 'check_fits',
           'distill_student_state', 'load_state_dict_source', 'load_weights_strict',
           'state_dict_of']

#: Key prefix of the student in a ``DistillGraph`` state_dict (mmrazor's ``architecture``).
STUDENT_PREFIX = 'architecture.'


def check_checkpoint(path: str) -> dict:
    """Load a checkpoint safely (``weights_only``) or fail with a message naming the file.

    Returns:
        dict: The loaded checkpoint (a ``state_dict`` mapping, possibly with ``meta``).
    """
    if osp.isdir(path):
        pointer = osp.join(path, 'last_checkpoint')
        raise CheckpointError(f'checkpoint {path!r} is a directory, not a file: give a .pth '
                              f'file inside it (e.g. the one named in {pointer})')
    if not osp.isfile(path):
        raise CheckpointError(f'checkpoint {path!r} not found: check the path (a relative path '
                              f'is taken from the current directory)')
    if osp.getsize(path) == 0:
        raise CheckpointError(f'checkpoint {path!r} is an empty file (0 bytes): it was not written '
                              f'completely; use an earlier checkpoint of the run')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 (torch's unpicklers raise any type on arbitrary bytes,
        # KeyError and IndexError included: every failure to read the file is this error)
        reason = ' '.join(str(e).split())[:200]
        raise CheckpointError(
            f'checkpoint {path!r} cannot be loaded ({type(e).__name__}: {reason}): it is '
            f'truncated or corrupt, not a torch checkpoint, or holds types that are not '
            f'allowlisted in distill/compat.py (untrusted pickles are refused on purpose); '
            f'use another checkpoint of the run') from e
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f'checkpoint {path!r} holds no state_dict of tensors (it holds a '
                              f'{type(ckpt).__name__}): not a model checkpoint')
    return ckpt


def state_dict_of(ckpt: dict) -> dict:
    """The ``state_dict`` of a loaded checkpoint, DDP's ``module.`` prefix removed."""
    state = ckpt.get('state_dict', ckpt)
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


def load_state_dict_source(source: str) -> dict:
    """The ``state_dict`` of a local checkpoint or of a URL (downloaded by mmengine, cached).

    Raises:
        CheckpointError: naming the file or URL when it cannot be read.
    """
    if source.startswith(('http://', 'https://')):
        from mmengine.runner.checkpoint import CheckpointLoader
        try:
            ckpt = CheckpointLoader.load_checkpoint(source, map_location='cpu')
        except Exception as e:  # noqa: BLE001 (network, HTTP and unpickling errors alike)
            raise CheckpointError(f'checkpoint {source!r} could not be downloaded or read '
                                  f'({type(e).__name__}: {str(e)[:200]}); download it and pass '
                                  f'the local file instead') from e
    else:
        from distill.paths import find_resource
        ckpt = check_checkpoint(find_resource(source) or source)  # e.g. checkpoints/... shipped
    return state_dict_of(ckpt)


def distill_student_state(state: dict) -> dict:
    """The student's entries of a ``DistillGraph`` state_dict, prefix removed ({} if none)."""
    return {k[len(STUDENT_PREFIX):]: v for k, v in state.items()
            if k.startswith(STUDENT_PREFIX)}


def find_run_config(checkpoint: str) -> str | None:
    """The config file that mmengine wrote next to ``checkpoint`` (its run's work dir)."""
    for path in sorted(glob.glob(osp.join(osp.dirname(osp.abspath(checkpoint)), '*.py'))):
        with open(path, errors='replace') as f:
            if 'DistillGraph' in f.read():
                return path
    return None


def export_command(checkpoint: str) -> str:
    """The exact export command (``distill-export-student``, i.e. ``tools/export_student.py``)
    for a distill run's checkpoint."""
    run_cfg = find_run_config(checkpoint) or '<the run config .py in its work dir>'
    out = osp.splitext(checkpoint)[0] + '_student'
    # the installed console script works from any directory (tools/export_student.py is the
    # same tool in the repository)
    return f'distill-export-student {run_cfg} {checkpoint} {out}'


def check_fits(own: dict, state: dict, source: str, config: str = 'the config',
               role: str = 'model') -> None:
    """Raise unless ``state`` holds exactly the keys of ``own``, with the same shapes.

    Args:
        own (dict): The model's ``state_dict``.
        state (dict): The checkpoint's ``state_dict`` (``module.`` prefix removed).
        source (str): The checkpoint file or URL (named in the error).
        config (str): The config the model was built from (named in the error).
        role (str): What the model is (``'model'``, ``'teacher'``, ``'student'``).

    Raises:
        CheckpointError: naming the file, the config and the first mismatching keys. A
            distillation run's checkpoint (keys ``architecture.*``) given for a plain detector
            gets the exact command that exports its student.
    """
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    shapes = sorted(f'{k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the '
                    f'model' for k in own.keys() & state.keys()
                    if torch.is_tensor(state[k]) and state[k].shape != own[k].shape)
    if not (missing or unexpected or shapes):
        return
    own_is_graph = any(k.startswith(STUDENT_PREFIX) for k in own)
    if not own_is_graph and distill_student_state(state):
        raise CheckpointError(
            f'{role} checkpoint {source!r} is a distillation run\'s checkpoint (its keys carry '
            f'the graph prefix {STUDENT_PREFIX!r}), but {config} is a plain detector: export '
            f'its student first: {export_command(source)}')
    parts = []
    for what, keys in (('missing', missing), ('unexpected', unexpected),
                       ('shape mismatch', shapes)):
        if keys:
            parts.append(f'{len(keys)} {what} (e.g. {keys[:3]})')
    raise CheckpointError(f'{role} checkpoint {source!r} does not fit {config} ('
                          + '; '.join(parts) + f'): give a checkpoint of this {role} config, '
                          f'or the config the checkpoint was trained with')


def load_weights_strict(model: nn.Module, source: str, role: str = 'model',
                        config: str | None = None) -> None:
    """Load ``source`` into ``model``; every key must match in name and shape.

    A checkpoint of a distill run (keys ``architecture.*``) is accepted: its student is used.

    Raises:
        CheckpointError: naming the file and the first mismatching keys.
    """
    state = load_state_dict_source(source)
    state = distill_student_state(state) or state
    check_fits(model.state_dict(), state, source, config or f'the {role} config', role)
    model.load_state_dict(state, strict=True)
