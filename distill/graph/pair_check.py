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
    'priors per location': 'the graph pairs one prior per location',
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


def _head_facts(model: nn.Module) -> dict:
    head = _dense_head(model)
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

    Checked: both are dense detectors (a ``bbox_head``), number of classes (KD compares class
    logits one to one), ``reg_max`` (LD compares box distributions bin by bin), FPN strides
    and one prior per location (the graph pairs teacher and student outputs location by
    location), and the input normalisation (the teacher sees the student's preprocessed
    images).

    Args:
        student (nn.Module): The built student detector.
        teacher (nn.Module): The built teacher detector.
        student_name (str): How to name the student in the message (e.g. its config file).
        teacher_name (str): How to name the teacher in the message.
        outputs (set[str], optional): The teacher outputs the edges read; the number of
            classes is then checked only if ``cls_logits`` is read and ``reg_max`` only if
            ``box_dist`` is (None: check both).

    Raises:
        PairMismatchError: One line: each mismatching field with both values and both names,
            and what to do.
    """
    where = f'student {student_name}', f'teacher {teacher_name}'
    if _dense_head(student) is None or _dense_head(teacher) is None:
        s, t = (type(_dense_head(m)).__name__ if _dense_head(m) is not None
                else _without_dense_head(m) for m in (student, teacher))
        raise PairMismatchError(
            f'teacher {teacher_name} cannot be distilled into student {student_name}: '
            f'model.bbox_head is {s} in {where[0]} vs {t} in {where[1]} (the graph distils '
            f'dense single-stage detectors: GFL, ATSS, ...); use a single-stage teacher and '
            f'student')
    s, t = _head_facts(student), _head_facts(teacher)
    bad = []
    for key in s:  # the same keys on both sides but the strides' (anchors or points)
        if outputs is not None and key in _ONLY_FOR and _ONLY_FOR[key] not in outputs:
            continue
        tkey = key if key in t else next(k for k in t if k.endswith('strides'))
        if key == PRIORS:
            if s[key] not in (None, 1) or t[key] not in (None, 1):
                bad.append(f'{key} is {s[key]!r} in {where[0]} vs {t[key]!r} in {where[1]} '
                           f'but must be 1 on both ({_why(key)}: one anchor ratio and '
                           f'scales_per_octave=1)')
        elif s[key] != t[tkey]:
            sv, tv = (_show(v, m, key) for v, m in ((s[key], student), (t[tkey], teacher)))
            bad.append(f'{key} is {sv} in {where[0]} vs {tv} in {where[1]} ({_why(key)})')
    if bad:
        raise PairMismatchError(
            f'teacher {teacher_name} cannot be distilled into student {student_name}: '
            + '; '.join(bad) + f'; {_FIX}')
