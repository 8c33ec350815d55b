"""The "inheriting" start of FGD (Yang et al., CVPR 2022): the student's neck and head
initialised from the teacher's where their shapes allow.

FGD's authors start their COCO students from the teacher's neck and head where the two have
the same head structure (their GFL R50 43.5 AP is reported with it). It changes the
student's start, not the loss, so a table must never mix it with cold starts: it is a recipe
key of its own (``inherit_from_teacher = ['neck', 'bbox_head']``, recipe ``fgd_inherit``), off
by default.

The copy happens in :meth:`DistillGraph.init_weights`, after the student's own init: mmengine's
``Runner`` calls ``init_weights`` before it loads ``load_from`` or a resumed checkpoint, so a
resumed run continues from its checkpoint, not from the teacher again.
"""

from __future__ import annotations

import torch
from mmengine.logging import print_log
from torch import nn

from distill.errors import ConfigError

#: The modules FGD's inheriting start copies.
INHERITABLE = ('backbone', 'neck', 'bbox_head')


def check_inherit(prefixes, source: str) -> tuple[str, ...]:
    """The module names of a recipe's ``inherit_from_teacher``, checked.

    Raises:
        ConfigError: not a list of module names from :data:`INHERITABLE`.
    """
    if isinstance(prefixes, str) or not all(isinstance(p, str) for p in prefixes or ()):
        raise ConfigError(f'{source}: inherit_from_teacher={prefixes!r} must be a list of module '
                          f'names, e.g. ["neck", "bbox_head"]')
    bad = [p for p in prefixes if p not in INHERITABLE]
    if bad:
        raise ConfigError(f'{source}: inherit_from_teacher names {bad}, not among the modules '
                          f'a student can inherit {list(INHERITABLE)}')
    return tuple(prefixes)


def inherit_from_teacher(student: nn.Module, teacher: nn.Module, prefixes, source: str) -> dict:
    """Copy the teacher's parameters and buffers into the student's, under ``prefixes``, for
    every leaf module (a conv, a norm layer, a scale) whose tensors all have the teacher's
    names and shapes.

    Args:
        student (nn.Module): The student detector (initialised).
        teacher (nn.Module): The teacher detector (its checkpoint loaded).
        prefixes (tuple[str, ...]): Top-level modules to copy (``neck``, ``bbox_head``).
        source (str): Who asked (recipe file), for messages.

    Returns:
        dict: ``copied`` and ``skipped`` (names whose shapes differ or that the teacher lacks).

    Raises:
        ConfigError: a module is missing on a side, or no layer with a weight could be copied
            (the widths differ everywhere: the inheriting start needs the teacher's structure).
    """
    t_state = teacher.state_dict()
    copied, skipped = [], []
    for prefix in prefixes:
        for side, model in (('student', student), ('teacher', teacher)):
            if getattr(model, prefix, None) is None:
                raise ConfigError(f'{source}: inherit_from_teacher names {prefix!r}, but '
                                  f'the {side} ({type(model).__name__}) has no {prefix}')
        # leaf module by leaf module (a conv with its bias, a norm layer): all of its tensors
        # or none, so that no bias is taken without its weight
        for mod_name, module in getattr(student, prefix).named_modules(prefix=prefix):
            own = dict(module.named_parameters(recurse=False),
                       **dict(module.named_buffers(recurse=False)))
            if not own:
                continue
            names = {f'{mod_name}.{k}': v for k, v in own.items()}
            if all(n in t_state and t_state[n].shape == v.shape for n, v in names.items()):
                with torch.no_grad():
                    for n, v in names.items():
                        v.copy_(t_state[n])
                copied += names
            else:
                skipped += names
    if not any(t_state[n].dim() >= 2 for n in copied):  # scalars and vectors alone: no layer
        raise ConfigError(
            f'{source}: inherit_from_teacher={list(prefixes)}: no layer of the student\'s there '
            f'has the teacher\'s shape (e.g. {skipped[:1]}): the '
            f'inheriting start needs a neck and head of the teacher\'s widths; use the recipe '
            f'without it')
    print_log(f'[distill] inheriting start ({source}): {len(copied)} tensors of the student\'s '
              f'{"/".join(prefixes)} copied from the teacher, {len(skipped)} kept (shape or '
              f'name differs{": " + ", ".join(skipped[:3]) if skipped else ""})',
              logger='current')
    return dict(copied=copied, skipped=skipped)
