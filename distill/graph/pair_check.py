"""Is a teacher compatible with a student? Checked on the built heads, before training."""

from __future__ import annotations

from torch import nn

from distill.errors import DistillError


class PairMismatchError(DistillError, ValueError):
    """The teacher's and the student's heads cannot be distilled into each other.

    The message is one line: every mismatching field with both values and both config files,
    and what to do.
    """


#: Why each field must agree (said in the error message).
_WHY = {
    'model.bbox_head.num_classes': 'KD compares class logits one to one',
    'model.bbox_head.reg_max': 'LD compares box distributions bin by bin',
    'strides': 'the graph pairs teacher and student outputs location by location',
    'priors per location': 'the graph pairs teacher and student outputs prior by prior',
    'model.data_preprocessor': 'the teacher sees the student\'s preprocessed images',
}

#: The field name of the number of priors per location.
PRIORS = 'model.bbox_head priors per location (anchor ratios x scales_per_octave)'

_FIX = ('use a teacher whose config has the same values as the student\'s for these fields '
        '(and a checkpoint trained with that config), or change the student config')


def _why(field: str) -> str:
    return next((why for key, why in _WHY.items() if key in field), '')


def _dense_head(model: nn.Module):
    return getattr(model, 'bbox_head', None)


def _without_dense_head(model: nn.Module) -> str:
    """How to show a detector that has no ``bbox_head`` in the message."""
    heads = [n for n, _ in model.named_children() if n.endswith('head')]
    return (f'none ({type(model).__name__} has '
            f'{", ".join(heads) if heads else "no head"}, no dense bbox_head)')


def _show(value, model: nn.Module, key: str) -> str:
    if value is None:  # e.g. an ATSS head has no reg_max
        owner = model.data_preprocessor if 'preprocessor' in key else model.bbox_head
        return f'none ({type(owner).__name__} has no {key.rsplit(".", 1)[-1]})'
    return repr(value)


def _floats(t) -> tuple:
    # 6 significant digits: float32 buffers print as the numbers written in the config
    return tuple(float(f'{x:.6g}') for x in t.flatten().tolist())


def _neck_facts(model: nn.Module) -> dict:
    """A detector without a dense head: its neck's strides are its RPN's (one anchor level
    per neck map), where it has an RPN."""
    gen = getattr(getattr(model, 'rpn_head', None), 'prior_generator', None)
    if gen is None:
        return {}
    return {'model.rpn_head.anchor_generator.strides': [tuple(s) for s in gen.strides]}


def _head_facts(model: nn.Module) -> dict:
    head = _dense_head(model)
    if head is None:
        facts = _neck_facts(model)
    else:
        gen = getattr(head, 'prior_generator', None)
        anchor_based = type(gen).__name__ != 'MlvlPointGenerator'
        strides_key = ('model.bbox_head.anchor_generator.strides' if anchor_based
                       else 'model.bbox_head.strides')
        facts = {
            'model.bbox_head.num_classes': getattr(head, 'num_classes', None),
            'model.bbox_head.reg_max': getattr(head, 'reg_max', None),
            strides_key: [tuple(s) for s in getattr(gen, 'strides', [])],
            PRIORS: getattr(head, 'num_base_priors', None),
        }
    pre = getattr(model, 'data_preprocessor', None)
    mean, std = getattr(pre, 'mean', None), getattr(pre, 'std', None)
    facts['model.data_preprocessor.mean'] = None if mean is None else _floats(mean)
    facts['model.data_preprocessor.std'] = None if std is None else _floats(std)
    facts['model.data_preprocessor.bgr_to_rgb'] = bool(getattr(pre, '_channel_conversion',
                                                               False))
    return facts


#: Fields that matter only when an edge reads the named output.
_ONLY_FOR = {'model.bbox_head.num_classes': 'cls_logits', 'model.bbox_head.reg_max': 'box_dist'}


def check_pair(student: nn.Module, teacher: nn.Module, student_name: str = 'student',
               teacher_name: str = 'teacher', outputs=None) -> None:
    """Raise :class:`PairMismatchError` naming every field where the heads disagree.

    Checked: both are dense detectors (a ``bbox_head``; not needed when the edges read only
    the necks, ``outputs={'neck'}``: a two-stage detector then pairs, its RPN's anchor strides
    standing for its neck's levels), number of classes (KD compares class
    logits one to one), ``reg_max`` (LD compares box distributions bin by bin), FPN strides
    and the priors per location (the graph pairs teacher and student outputs prior by prior:
    the same number on both sides, e.g. RetinaNet's 9 anchors; not checked when the edges read
    only the neck's maps), and the input normalisation (the teacher sees the student's
    preprocessed images).

    Args:
        student (nn.Module): The built student detector.
        teacher (nn.Module): The built teacher detector.
        student_name (str): How to name the student in the message (e.g. its config file).
        teacher_name (str): How to name the teacher in the message.
        outputs (set[str], optional): The teacher outputs the edges read; the number of
            classes is then checked only if ``cls_logits`` is read and ``reg_max`` only if
            ``box_dist`` is, and the priors per location only if a head output is (None:
            check all).

    Raises:
        PairMismatchError: One line: each mismatching field with both values and both names,
            and what to do.
    """
    where = f'student {student_name}', f'teacher {teacher_name}'
    # feature edges read only the necks: any detector with one pairs (two-stage included)
    neck_only = outputs is not None and bool(outputs) and set(outputs) <= {'neck'}
    if (_dense_head(student) is None or _dense_head(teacher) is None) and not neck_only:
        s, t = (type(_dense_head(m)).__name__ if _dense_head(m) is not None
                else _without_dense_head(m) for m in (student, teacher))
        raise PairMismatchError(
            f'teacher {teacher_name} cannot be distilled into student {student_name}: '
            f'model.bbox_head is {s} in {where[0]} vs {t} in {where[1]} (the graph distils '
            f'the head outputs of dense single-stage detectors: GFL, ATSS, ...); use a '
            f'single-stage teacher and student, or only feature edges (output=\'neck\': '
            f'recipes pkd, cwd, mgd, fgd)')
    s, t = _head_facts(student), _head_facts(teacher)
    bad = []
    for key in s:  # the same keys on both sides but the strides' (anchors, points or RPN's)
        if outputs is not None and key in _ONLY_FOR and _ONLY_FOR[key] not in outputs:
            continue
        tkey = key if key in t else next((k for k in t if k.endswith('strides')), None)
        if tkey is None or not (tkey == key or key.endswith('strides')):
            continue  # a head's field that a detector without a dense head does not have
        if key == PRIORS:
            # feature edges compare the neck's maps, a value per location whatever the head
            if outputs is not None and outputs and set(outputs) <= {'neck'}:
                continue
            if (s[key] or 1) != (t[key] or 1):
                bad.append(f'{key} is {s[key]!r} in {where[0]} vs {t[key]!r} in {where[1]} '
                           f'but must be equal ({_why(key)}: the same anchor ratios and '
                           f'scales_per_octave)')
        elif s[key] != t[tkey]:
            sv, tv = (_show(v, m, key) for v, m in ((s[key], student), (t[tkey], teacher)))
            # an RPN's strides stand for a head-less detector's neck: name both fields then
            other = f'{tkey} ' if 'rpn_head' in key + tkey and tkey != key else ''
            bad.append(f'{key} is {sv} in {where[0]} vs {other}{tv} in {where[1]} '
                       f'({_why(key)})')
    if bad:
        raise PairMismatchError(
            f'teacher {teacher_name} cannot be distilled into student {student_name}: '
            + '; '.join(bad) + f'; {_FIX}')
