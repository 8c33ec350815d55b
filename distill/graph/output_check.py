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
    only asked for what its forward gives: it runs no label assignment).

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
    if student_head is not None:  # (a detector without a dense head: check_pair says so)
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
            on_teacher = of_teacher or ref.get('of') == 'cross'
            model = teacher if on_teacher else student
            head = getattr(model, 'bbox_head', None)
            if head is None:
                continue
            spec = model_outputs(model).get(ref['output'])
            role = 'teacher' if on_teacher else 'student'
            config = pair_names[1 if on_teacher else 0]
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
