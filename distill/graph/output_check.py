"""Checks of a graph's edges against its built models: every tap a submodule, every named
output one that the head declares (and a teacher is asked only for what its forward gives)."""

from __future__ import annotations

from mmrazor.models.task_modules.recorder import ModuleOutputsRecorder, RecorderManager
from torch import nn

from distill.errors import RecipeError
from distill.graph.outputs import describe, head_outputs, model_outputs
from distill.graph.recipe_check import reads_teacher

#: The student outputs the regions need: class logits (confidence) and assigned labels.
CONTEXT_OUTPUTS = ('cls_logits', 'pos_mask')


def check_tap_sources(manager: RecorderManager, model: nn.Module, side: str,
                       pair_names: tuple[str, str], source: str) -> None:
    """Every ``ModuleOutputs`` tap must name a submodule of its model (mmrazor would hook
    nothing and the first step would fail reading an empty record)."""
    modules = dict(model.named_modules())
    for name, recorder in manager.recorders.items():
        if isinstance(recorder, ModuleOutputsRecorder) and recorder.source not in modules:
            where = pair_names[0] if side == 'student' else pair_names[1]
            heads = [m for m in modules if m and '.' not in m]
            raise RecipeError(f'{source}: {side} tap {name!r} records module '
                              f'{recorder.source!r}, which {type(model).__name__} ({where}) '
                              f'does not have; its top-level modules are {heads}')


def option_hint(head: nn.Module, output: str, config: str, role: str) -> str:
    """How to give a head an output it lacks, where a head option does (deltas -> GFL's
    general distribution: ATSS, DDOD, FCOS/MOD)."""
    if output == 'box_dist' and type(head).__name__ == 'ATSSHead':
        return (f'; it predicts box deltas: use the ATSS head with the general-distribution '
                f'option, model.bbox_head.type=\'ATSSDistHead\' and box_dist=16 in {config}')
    if output == 'box_dist' and hasattr(head, 'box_dist_reg_max'):
        how = (' (or --cfg-options model.bbox_head.box_dist=16)' if role == 'student'
               else ', and a checkpoint trained with it')
        return (f'; it predicts box deltas: turn on its general-distribution option, '
                f'model.bbox_head.box_dist=16 in {config}{how}')
    return ''


def check_outputs(edge_cfgs: list, student: nn.Module, teacher: nn.Module | None,
                  pair_names: tuple[str, str], source: str) -> None:
    """Every named output an edge reads exists on that model's head (and a teacher is
    only asked for what its forward gives: it runs no label assignment); a detector without a
    dense head (two-stage: ``rpn_head``, ``roi_head``) gives only ``neck``.

    Args:
        edge_cfgs (list[dict]): The graph's edges.
        student, teacher (nn.Module): The detectors (teacher None: no teacher).
        pair_names (tuple[str, str]): How errors name them (config files).
        source (str): How errors name the edges (the recipe file).

    Raises:
        RecipeError: Naming the edge, the output, the head and its config.
    """
    if not edge_cfgs:
        return
    student_head = getattr(student, 'bbox_head', None)
    # (a detector without a dense head: check_pair says so; a head that declares nothing is
    # read as none, its regions from the neck's cells: only the edges reading it are refused)
    if student_head is not None and head_outputs(student_head):
        missing = [n for n in CONTEXT_OUTPUTS if n not in head_outputs(student_head)]
        if missing:
            raise RecipeError(f'{source}: the regions need the student head\'s outputs '
                              f'{missing}, which {describe(student_head)} '
                              f'({pair_names[0]}) does not declare; declare them '
                              f'with distill.graph.outputs.register_head_outputs')
    for edge in edge_cfgs:
        refs = [(edge['student'], False), (edge['teacher'], True)]
        refs += [(dict(output=o), False) for o in (edge.get('targets') or {}).values()]
        for ref, teacher_side in refs:
            of_teacher = teacher_side and reads_teacher(edge)
            where = f'{source}: edge {edge["name"]!r}'
            if of_teacher and teacher is None:
                what = ref.get('output', ref.get('tap'))
                raise RecipeError(f'{where} reads the teacher\'s {what!r} but the run has '
                                  f'no teacher: give one, or read the student itself with '
                                  f'teacher=dict(output=..., of=\'student\') '
                                  f'(self-distillation)')
            if 'output' not in ref:
                continue
            if ref.get('of') == 'cross' and getattr(student, 'bbox_head', None) is None:
                raise _no_dense_head(source, student, edge, ref['output'], 'student',
                                     pair_names[0], 'a cross-head output (the teacher\'s head '
                                     'run on the student head\'s features)')
            on_teacher = of_teacher or ref.get('of') == 'cross'
            model = teacher if on_teacher else student
            head = getattr(model, 'bbox_head', None)
            spec = model_outputs(model).get(ref['output'])
            role = 'teacher' if on_teacher else 'student'
            config = pair_names[1 if on_teacher else 0]
            if head is None:
                if spec is None:
                    what = ('a neck\'s output, and it has no neck' if ref['output'] == 'neck'
                            else 'a dense head\'s output')
                    raise _no_dense_head(source, model, edge, ref['output'], role, config, what)
                continue
            if spec is None:
                raise RecipeError(f'{where} needs the output {ref["output"]!r} of the {role} '
                                  f'head, which {describe(head)} ({config}) does not have'
                                  f'{option_hint(head, ref["output"], config, role)}')
            if on_teacher and spec.tap == 'assign':
                raise RecipeError(f'{where} reads the teacher\'s {ref["output"]!r}, which '
                                  f'comes from label assignment; the teacher runs only its '
                                  f'forward ({describe(head)}, {config})')
            if ref.get('of') == 'cross' and spec.maps:
                raise RecipeError(f'{where}: a cross-head path gives head outputs, not '
                                  f'{ref["output"]!r}')


def _heads(model: nn.Module) -> str:
    heads = [n for n, _ in model.named_children() if n.endswith('head')]
    return ', '.join(heads) if heads else 'no head'


def _no_dense_head(source: str, model: nn.Module, edge: dict, output: str, role: str,
                   config: str, what: str) -> RecipeError:
    """The refusal of a head output on a detector without a dense head (one line)."""
    return RecipeError(
        f'{source}: {type(model).__name__} has no bbox_head: the edge {edge["name"]!r} reads '
        f'{output!r} of the {role} ({config}), {what}; a detector without a dense head (it has '
        f'{_heads(model)}) takes only feature edges, output=\'neck\' (recipes pkd, cwd, mgd, '
        f'fgd)')


def check_regions(edge_cfgs: list, regions: dict, student: nn.Module,
                  teacher: nn.Module | None, pair_names: tuple[str, str], source: str) -> None:
    """A region that needs a dense head's priors, positives or class scores is refused on a
    detector without one (two-stage); regions that need only locations run on any neck.

    Args:
        edge_cfgs (list[dict]): The graph's edges.
        regions (dict): The built region of each edge, by name (their ``needs``; a region that
            declares none is not checked).
        student, teacher (nn.Module): The detectors (teacher None: no teacher).
        pair_names (tuple[str, str]): How errors name them (config files).
        source (str): How errors name the edges (the recipe file).

    Raises:
        RecipeError: One line naming the recipe file, the edge, the region, what it needs and
            the model and its config.
    """
    from distill.graph.nodes import (
        HEAD_NEEDS,
        OUTPUT_NEEDS,
        TEACHER_NEEDS,
        has_dense_head,
        region_needs,
    )

    for edge in edge_cfgs:
        region = regions[edge['name']]
        needs = region_needs(region) or ()
        for table, model, role, config in ((HEAD_NEEDS, student, 'student', pair_names[0]),
                                           (TEACHER_NEEDS, teacher, 'teacher', pair_names[1])):
            missing = [table[n] for n in needs if n in table]
            if missing and model is not None and not has_dense_head(model):
                what = ', '.join(missing[:-1]) + (' and ' if len(missing) > 1 else '')
                raise RecipeError(
                    f'{source}: edge {edge["name"]!r}: region {region!r} needs the {role} '
                    f'head\'s {what}{missing[-1]}, but {type(model).__name__} ({config}) has '
                    f'no bbox_head (it has {_heads(model)}); on it use a region of locations: '
                    f'AllRegion, GTBoxRegion or FGDRegion')
        # Named outputs a region reads on demand (ctx.student_output) must be declared.
        for name in needs:
            if (name in OUTPUT_NEEDS and has_dense_head(student)
                    and name not in model_outputs(student)):
                raise RecipeError(
                    f'{source}: edge {edge["name"]!r}: region {region!r} needs the student '
                    f'head\'s output {name!r}, which the student ({pair_names[0]}) does not '
                    f'declare: {describe(student.bbox_head)}')
