"""Check a recipe's edges when the graph is built, not at the first training step.

A misspelt loss or region type, a tap that no recorder provides or a missing field used to
surface as a bare ``KeyError`` at the first step, after the data and both models were built.
"""

from __future__ import annotations

import difflib
import inspect

from distill.errors import RecipeError
from distill.graph.weight_schedule import check_schedule, schedules_of

REQUIRED = ('name', 'loss', 'student', 'teacher', 'region')
OPTIONAL = ('normalize', 'targets', 'weight_schedule')
TAP_FIELDS = ('tap', 'index', 'record', 'of')
OUTPUT_FIELDS = ('output', 'of')
#: The fields of a cross-head output (``of='cross'``, student side only).
CROSS_FIELDS = ('layer', 'student_layer', 'align')
NORMALIZE = ('weight', 'count', 'positives')
SIDES = ('student', 'teacher')


def reads_teacher(edge: dict) -> bool:
    """Whether an edge's teacher side reads the teacher model (not the student itself)."""
    return edge['teacher'].get('of', 'teacher') == 'teacher'


def _near(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=3, cutoff=0.75)
    return f'did you mean {close}? ' if close else ''


def _check_type(spec, registry, where: str, field: str, ours) -> None:
    """``spec`` is ``dict(type=..., **kwargs)`` naming a registered class that takes kwargs."""
    if not isinstance(spec, dict) or 'type' not in spec:
        raise RecipeError(f'{where}: {field}={spec!r} must be a dict with a type, e.g. '
                          f'dict(type={ours[0]!r})')
    name = spec['type']
    if not isinstance(name, str):
        return  # a class or a built module (plain Python)
    cls = registry.get(name)
    if cls is None:
        raise RecipeError(f'{where}: {field}.type={name!r} is not a registered {field} '
                          f'({_near(name, ours)}the distill ones are {sorted(ours)})')
    kwargs = {k: v for k, v in spec.items() if k not in ('type', '_scope_')}
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as e:
        params = [p for p in inspect.signature(cls).parameters if p not in ('args', 'kwargs')]
        raise RecipeError(f'{where}: {field}={spec!r}: {e} ({name} takes {params})') from None


def check_edges(edges, source: str, student_taps: dict, teacher_taps: dict) -> None:
    """Raise :class:`~distill.errors.RecipeError` naming the recipe file and the edge.

    Args:
        edges (list[dict]): The recipe's edges.
        source (str): The recipe file (or what to call the edges in messages).
        student_taps (dict): The student's tap names (recorder configs).
        teacher_taps (dict): The teacher's tap names.
    """
    from mmengine.registry import DefaultScope
    from mmrazor.registry import MODELS, TASK_UTILS

    from distill import losses, regions

    if not isinstance(edges, (list, tuple)):
        raise RecipeError(f'{source}: edges={edges!r} must be a list of dicts')
    names = []
    with DefaultScope.overwrite_default_scope('mmrazor'):
        for i, edge in enumerate(edges):
            if not isinstance(edge, dict):
                raise RecipeError(f'{source}: edge #{i} is {edge!r}, not a dict(name=..., '
                                  f'loss=..., student=..., teacher=..., region=...)')
            where = f'{source}: edge {edge.get("name", f"#{i}")!r}'
            missing = [k for k in REQUIRED if k not in edge]
            if missing:
                raise RecipeError(f'{where} misses field(s) {missing}; an edge needs '
                                  f'{list(REQUIRED)} (optional: {list(OPTIONAL)})')
            unknown = [k for k in edge if k not in REQUIRED + OPTIONAL]
            if unknown:
                raise RecipeError(f'{where}: unknown field(s) {unknown} '
                                  f'({_near(unknown[0], REQUIRED + OPTIONAL)}an edge has '
                                  f'{list(REQUIRED + OPTIONAL)})')
            names.append(edge['name'])
            _check_type(edge['loss'], MODELS, where, 'loss',
                        [n for n in losses.__all__ if n.endswith('Loss')])
            _check_type(edge['region'], TASK_UTILS, where, 'region',
                        [n for n in regions.__all__ if n.endswith('Region')])
            norm = edge.get('normalize', 'weight')
            constant = isinstance(norm, (int, float)) and not isinstance(norm, bool)
            if not (norm in NORMALIZE if isinstance(norm, str) else constant and norm > 0):
                raise RecipeError(f'{where}: normalize={norm!r}, expected one of '
                                  f'{list(NORMALIZE)} or a positive number (a constant '
                                  f'avg factor, as the published LD code)')
            for side, taps in (('student', student_taps), ('teacher', teacher_taps)):
                _check_ref(edge[side], side, where, taps, student_taps)
            if isinstance(edge['student'], dict) and edge['student'].get('of') == 'cross' \
                    and not reads_teacher(edge):
                raise RecipeError(f'{where}: a cross-head output (student of=\'cross\') is '
                                  f'compared with the teacher\'s own: its teacher side must '
                                  f'read the teacher, not of={edge["teacher"].get("of")!r}')
            check_schedule(edge, where)
            if schedules_of(edge) and 'loss' in str(edge['name']):
                raise RecipeError(f'{where}: an edge with a weight_schedule logs its weight as '
                                  f'weight_<name>, and mmengine sums every logged value whose '
                                  f'key holds "loss": rename the edge without "loss"')
            targets = edge.get('targets') or {}
            if not isinstance(targets, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in targets.items()):
                raise RecipeError(f'{where}: targets={targets!r} must be dict(<loss argument>='
                                  f'<student output name>), e.g. dict(gt_boxes=\'gt_boxes\')')
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes or any(not isinstance(n, str) or not n for n in names):
        raise RecipeError(f'{source}: every edge needs a unique non-empty name, got {names}')


def _check_ref(ref, side: str, where: str, taps: dict, student_taps: dict) -> None:
    """A side of an edge: ``dict(output=<name>[, of])`` or ``dict(tap, index[, record, of])``."""
    if not isinstance(ref, dict) or ('tap' in ref) == ('output' in ref):
        raise RecipeError(f'{where}: {side}={ref!r} must be dict(output=<head output name>), '
                          f'e.g. dict(output=\'box_dist\') (or a raw tap reference '
                          f'dict(tap=<name>, index=<output index>))')
    of = ref.get('of', side)
    fields = (OUTPUT_FIELDS + (CROSS_FIELDS if of == 'cross' else ()) if 'output' in ref
              else TAP_FIELDS)
    bad = [k for k in ref if k not in fields]
    if bad:
        raise RecipeError(f'{where}: {side} has unknown field(s) {bad} (a reference has '
                          f'{list(fields)}; a cross-head output, of=\'cross\', also '
                          f'{list(CROSS_FIELDS)})')
    allowed = ['student', 'cross'] if side == 'student' else list(SIDES)
    if of not in allowed or (of == 'cross' and 'output' not in ref):
        raise RecipeError(f'{where}: {side}.of={of!r} must be one of {allowed} '
                          f'(of=\'student\' on the teacher side: self-distillation; '
                          f'of=\'cross\' on the student side, with an output name: the '
                          f'teacher head run on the student\'s features, CrossKD)')
    if 'output' in ref:
        if not isinstance(ref['output'], str) or not ref['output']:
            raise RecipeError(f'{where}: {side}.output={ref["output"]!r} must be an output name')
        return
    names = student_taps if of == 'student' else taps
    if ref['tap'] not in names:
        raise RecipeError(f'{where}: {side}.tap={ref["tap"]!r} does not exist; the '
                          f'{of} taps are {sorted(names)}')
    index = ref.get('index')
    if index is not None and (not isinstance(index, int) or index < 0):
        raise RecipeError(f'{where}: {side}.index={index!r} must be a '
                          f'non-negative int or None')
