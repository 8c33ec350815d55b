"""Loading checkpoints safely, with errors that name the file."""

from __future__ import annotations

import os.path as osp
import pickle
import zipfile

import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or not a detector checkpoint."""


def check_checkpoint(path: str) -> dict:
    """Load a checkpoint safely (``weights_only``) or fail with a message naming the file.

    Returns:
        dict: The loaded checkpoint (a ``state_dict`` mapping, possibly with ``meta``).
    """
    if not osp.isfile(path):
        raise CheckpointError(f'checkpoint {path!r} not found')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(
            f'checkpoint {path!r} cannot be loaded ({type(e).__name__}: {str(e)[:300]}). '
            'It is truncated/corrupt, not a torch checkpoint, or holds types that are not '
            'allowlisted in distill/compat.py (untrusted pickles are refused on purpose).') from e
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f'checkpoint {path!r} holds no state_dict of tensors')
    return ckpt


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
        ckpt = check_checkpoint(source)
    state = ckpt.get('state_dict', ckpt)
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


#: Key prefix of the student in a ``DistillGraph`` state_dict (mmrazor's ``architecture``).
STUDENT_PREFIX = 'architecture.'


def distill_student_state(state: dict) -> dict:
    """The student's entries of a ``DistillGraph`` state_dict, prefix removed ({} if none)."""
    return {k[len(STUDENT_PREFIX):]: v for k, v in state.items()
            if k.startswith(STUDENT_PREFIX)}


def load_weights_strict(model: nn.Module, source: str, role: str = 'model') -> None:
    """Load ``source`` into ``model``; every key must match in name and shape.

    A checkpoint of a distill run (keys ``architecture.*``) is accepted: its student is used.

    Raises:
        CheckpointError: naming the file and the first mismatching keys.
    """
    state = load_state_dict_source(source)
    state = distill_student_state(state) or state
    own = model.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    shapes = sorted(f'{k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the '
                    f'model' for k in own.keys() & state.keys() if state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        parts = []
        for what, keys in (('missing', missing), ('unexpected', unexpected),
                           ('shape mismatch', shapes)):
            if keys:
                parts.append(f'{len(keys)} {what} (e.g. {keys[:3]})')
        raise CheckpointError(f'{role} checkpoint {source!r} does not fit the {role} config: '
                              + '; '.join(parts))
    model.load_state_dict(state, strict=True)
