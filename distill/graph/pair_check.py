"""Is a teacher compatible with a student? Checked on the built heads, before training."""

from __future__ import annotations

from torch import nn


class PairMismatchError(ValueError):
    """The teacher's and the student's heads cannot be distilled into each other."""


def _head_facts(model: nn.Module) -> dict:
    head = getattr(model, 'bbox_head', None)
    if head is None:
        raise PairMismatchError(f'{type(model).__name__} has no bbox_head: the distill graph '
                                f'supports dense (single-stage) detectors')
    gen = getattr(head, 'prior_generator', None)
    pre = getattr(model, 'data_preprocessor', None)
    facts = {
        'model.bbox_head.num_classes': getattr(head, 'num_classes', None),
        'model.bbox_head.reg_max': getattr(head, 'reg_max', None),
        'model.bbox_head.*_generator.strides': [tuple(s) for s in getattr(gen, 'strides', [])],
        'model.bbox_head priors per location': getattr(head, 'num_base_priors', None),
    }
    if pre is not None and hasattr(pre, 'mean') and pre.mean is not None:
        facts['model.data_preprocessor.mean/std'] = (pre.mean.flatten().tolist(),
                                                     pre.std.flatten().tolist())
        facts['model.data_preprocessor.bgr_to_rgb'] = getattr(pre, '_channel_conversion', None)
    return facts


def check_pair(student: nn.Module, teacher: nn.Module, student_name: str = 'student',
               teacher_name: str = 'teacher') -> None:
    """Raise :class:`PairMismatchError` naming every field where the heads disagree.

    Checked: number of classes (KD compares class logits one to one), ``reg_max`` (LD
    compares box distributions bin by bin), FPN strides and priors per location (the graph
    pairs teacher and student outputs location by location), and the input normalisation
    (the teacher sees the student's preprocessed images).

    Args:
        student (nn.Module): The built student detector.
        teacher (nn.Module): The built teacher detector.
        student_name (str): How to name the student in the message (e.g. its config file).
        teacher_name (str): How to name the teacher in the message.
    """
    s, t = _head_facts(student), _head_facts(teacher)
    bad = [f'  {k}: {s.get(k)!r} in {student_name} vs {t.get(k)!r} in {teacher_name}'
           for k in s.keys() | t.keys() if s.get(k) != t.get(k)]
    if s['model.bbox_head priors per location'] not in (None, 1):
        bad.append(f'  model.bbox_head priors per location: '
                   f'{s["model.bbox_head priors per location"]} in {student_name}; the graph '
                   f'pairs one prior per location (anchor ratios/scales of 1)')
    if bad:
        raise PairMismatchError('teacher and student cannot be distilled into each other:\n'
                                + '\n'.join(sorted(bad)))
