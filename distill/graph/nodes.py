"""What a node of the graph offers: a dense head, or only a neck (two-stage detectors).

Any detector with a neck is a node for feature edges (``output='neck'``); only a dense head
(``bbox_head``: GFL, ATSS, ...) gives head outputs (``cls_logits``, ``box_dist``, ...) and the
student's label assignment. A two-stage detector (``rpn_head`` and ``roi_head``: Faster R-CNN)
has no ``bbox_head``, so on it the graph installs no head tap, runs the teacher as
``extract_feat`` only, and builds the regions' context from the neck's maps: one location per
cell, no class scores, no assignment (:func:`region_context`). The regions that need those
(``MainRegion``, ``VLRRegion``; ``TeacherScoreRegion`` on a head-less teacher) are refused when
the graph is built (:func:`~distill.graph.output_check.check_regions`).

One-stage nodes keep every tap and value they had: the student's head and assignment taps are
installed (the regions' priors, positives and scores come from them); the teacher's head runs
only where an edge or a region reads it (its records are not used otherwise).
"""

from __future__ import annotations

import math

import torch
from mmdet.models.task_modules.prior_generators import MlvlPointGenerator
from torch import Tensor, nn

from distill.graph.edges import read_tap
from distill.graph.outputs import ASSIGN_TAP, HEAD_TAP, NECK_TAP, head_outputs, model_outputs
from distill.graph.recipe_check import reads_teacher
from distill.regions.base import RegionContext

#: What each :class:`RegionContext` field a region may declare in ``needs`` comes from: the
#: student's dense head, or the teacher's (said in the refusals).
HEAD_NEEDS = {'priors': 'prior boxes', 'pos_mask': 'label assignment',
              'student_cls': 'class scores', 'label_weights': 'label weights'}
TEACHER_NEEDS = {'teacher_cls': 'class scores'}
#: The student head outputs a region reads on demand (``RegionContext.student_output``):
#: refused where the head does not declare them.
OUTPUT_NEEDS = ('label_weights',)


def has_dense_head(model: nn.Module | None) -> bool:
    """Whether a detector has a dense head the graph reads: a ``bbox_head`` that declares its
    outputs (a two-stage detector has none; a head that declares nothing, e.g. a user's head
    before ``register_head_outputs``, gives the graph nothing, so its node is read as a neck
    only, as a two-stage one: its own losses train as always)."""
    head = getattr(model, 'bbox_head', None)
    return head is not None and bool(head_outputs(head))


def region_needs(region) -> tuple | None:
    """The context fields a built region reads (its class's ``needs``).

    Returns:
        tuple[str] | None: Names among ``priors``, ``pos_mask``, ``student_cls``,
        ``teacher_cls`` and ``locations`` (one weight per map cell); None for a region that
        does not declare them (it may read anything).
    """
    needs = getattr(region, 'needs', None)
    return None if needs is None else tuple(needs)


def _raw_taps(edge_cfgs: list, student_side: bool) -> set:
    """The tap names raw references read on the student (or the teacher) model."""
    names = set()
    for edge in edge_cfgs:
        for side in ('student', 'teacher'):
            ref = edge[side]
            if 'tap' not in ref:
                continue
            on_student = side == 'student' or not reads_teacher(edge)
            if on_student == student_side:
                names.add(ref['tap'])
    return names


def _teacher_head_read(edge_cfgs: list, regions: dict) -> bool:
    """Whether an edge or a region reads the teacher's head (outputs, cross paths, scores)."""
    for edge in edge_cfgs:
        t = edge['teacher']
        if reads_teacher(edge) and t.get('output', 'neck') != 'neck':
            return True
        if edge['student'].get('of') == 'cross':
            return True
        needs = region_needs(regions[edge['name']])
        if needs is None or 'teacher_cls' in needs:
            return True
    return 'head' in _raw_taps(edge_cfgs, student_side=False)


def node_taps(student: nn.Module, teacher: nn.Module | None, edge_cfgs: list, regions: dict,
              student_taps: dict, teacher_taps: dict) -> tuple[dict, dict]:
    """The default taps a graph keeps on each node (in place of :data:`DEFAULT_*_TAPS`).

    A student with a dense head keeps its head and assignment taps (the regions read them); a
    head-less one records its neck instead (the regions' locations). A teacher's head tap is
    kept only where it has a dense head that an edge or a region reads. A raw reference to a
    dropped tap keeps it (and the tap check then names what the model lacks).

    Args:
        student, teacher (nn.Module): The detectors (teacher None: no teacher).
        edge_cfgs (list[dict]): The graph's edges.
        regions (dict): The built region of each edge, by edge name.
        student_taps, teacher_taps (dict): Recorder configs by name, the defaults included.

    Returns:
        tuple[dict, dict]: The student's and the teacher's recorder configs.
    """
    student_taps, teacher_taps = dict(student_taps), dict(teacher_taps)
    if not has_dense_head(student):
        kept = _raw_taps(edge_cfgs, student_side=True)
        for name, default in (('head', HEAD_TAP), ('assign', ASSIGN_TAP)):
            if student_taps.get(name) == default and name not in kept:
                del student_taps[name]
        student_taps.setdefault('neck', NECK_TAP)
    head_read = has_dense_head(teacher) and _teacher_head_read(edge_cfgs, regions)
    if (teacher_taps.get('head') == HEAD_TAP and not head_read
            and 'head' not in _raw_taps(edge_cfgs, student_side=False)):
        del teacher_taps['head']
    return student_taps, teacher_taps


def runs_head(taps: dict) -> bool:
    """Whether some tap records the dense head (or a module inside it): the teacher's step
    then runs ``bbox_head`` after ``extract_feat``."""
    head = HEAD_TAP['source']
    return any(str(cfg.get('source', '')).split('.')[0] == head for cfg in taps.values())


def head_priors(head: nn.Module, maps: list[Tensor], anchor_free_scale: float,
                cache: dict) -> list[Tensor]:
    """A dense head's priors per level; preset squares for anchor-free heads (LD paper).

    Args:
        head (nn.Module): The student's dense head (its ``prior_generator``).
        maps (list[Tensor[B, K, H_l, W_l]]): The head's maps (their sizes and device).
        anchor_free_scale (float): Side of the preset square, in strides, around a point.
        cache (dict): The graph's prior cache (cleared when the graph moves).

    Returns:
        list[Tensor[N_l, 4]]: ``(x1, y1, x2, y2)`` per prior.
    """
    sizes = tuple(tuple(m.shape[-2:]) for m in maps)
    device = maps[0].device
    key = ('region', sizes, str(device))
    if key not in cache:
        gen = head.prior_generator
        priors = gen.grid_priors(sizes, device=device)
        if priors[0].shape[-1] == 2:  # points: anchor-free head
            priors = [torch.cat([p - anchor_free_scale * s[0] / 2,
                                 p + anchor_free_scale * s[0] / 2], dim=-1)
                      for p, s in zip(priors, gen.strides)]
        cache[key] = priors
    return cache[key]


def map_strides(model: nn.Module, maps: list[Tensor], batch_shape) -> list[tuple[int, int]]:
    """The stride ``(w, h)`` of each neck level of a detector without a dense head.

    The RPN's anchor strides where it has one per level (they are the neck's, in the config);
    else the padded batch size over the map size, to the nearest power of two (an FPN level
    is a power-of-two subsampling; the last one of an odd size is a cell short).

    Args:
        model (nn.Module): The detector.
        maps (list[Tensor[B, C, H_l, W_l]]): Its neck's maps.
        batch_shape (tuple[int, int] | None): The padded batch ``(H, W)``
            (``batch_input_shape``).
    """
    gen = getattr(getattr(model, 'rpn_head', None), 'prior_generator', None)
    if gen is not None and len(gen.strides) == len(maps):
        return [tuple(int(v) for v in s) for s in gen.strides]
    if batch_shape is None:
        raise ValueError(f'{type(model).__name__} has no RPN anchor strides and the batch has '
                         f'no batch_input_shape: the strides of its neck maps are unknown')
    return [tuple(2 ** round(math.log2(n / m.shape[d])) for n, d in ((batch_shape[1], -1),
                                                                    (batch_shape[0], -2)))
            for m in maps]


def location_priors(model: nn.Module, maps: list[Tensor], batch_shape,
                    anchor_free_scale: float, cache: dict) -> list[Tensor]:
    """One prior per cell of each neck map, for the regions of a head-less student.

    Each is the preset square an anchor-free head's point gets (side ``anchor_free_scale``
    strides, LD paper) around the cell's centre ``((col + 0.5) s, (row + 0.5) s)``: the
    regions that need only locations (``AllRegion``, ``GTBoxRegion``, ``FGDRegion``) read
    them; they are no head's priors.

    Args:
        model (nn.Module): The student.
        maps (list[Tensor[B, C, H_l, W_l]]): Its neck's maps.
        batch_shape (tuple[int, int] | None): The padded batch ``(H, W)``.
        anchor_free_scale (float): Side of the square, in strides.
        cache (dict): The graph's prior cache.

    Returns:
        list[Tensor[H_l W_l, 4]]: ``(x1, y1, x2, y2)`` per cell, row-major.
    """
    sizes = tuple(tuple(m.shape[-2:]) for m in maps)
    strides = map_strides(model, maps, batch_shape)
    device = maps[0].device
    key = ('locations', sizes, tuple(strides), str(device))
    if key not in cache:
        points = MlvlPointGenerator(strides, offset=0.5).grid_priors(sizes, device=device)
        half = [maps[0].new_tensor(s, dtype=torch.float32) * anchor_free_scale / 2
                for s in strides]
        cache[key] = [torch.cat([p - h, p + h], dim=-1) for p, h in zip(points, half)]
    return cache[key]


def region_context(graph, read, data_samples) -> RegionContext:
    """The regions' inputs for one batch.

    A student with a dense head: its priors, positives and class scores (as always). A
    head-less one: the cells of its neck's maps (:func:`location_priors`), no positives, no
    scores. The teacher's class scores where its head was recorded.

    Args:
        graph (DistillGraph): The graph (its models, recorders, prior cache).
        read (callable): ``read(ref, of_teacher)``, the step's memoised reader of outputs.
        data_samples (list[DetDataSample]): The batch's samples (GT boxes, batch shape).
    """
    student, teacher = graph.architecture, graph.teacher
    if has_dense_head(student):
        head_maps = read_tap(graph.student_recorders, dict(tap='head', index=0))
        priors = head_priors(student.bbox_head, head_maps, graph.anchor_free_scale,
                             graph._prior_cache)
    else:
        maps = list(read_tap(graph.student_recorders, dict(tap='neck')))
        shape = data_samples[0].metainfo.get('batch_input_shape') if data_samples else None
        priors = location_priors(student, maps, shape, graph.anchor_free_scale,
                                 graph._prior_cache)
    return RegionContext(
        priors=priors,
        gt_bboxes=[s.gt_instances.bboxes for s in data_samples],
        pos_mask=read(dict(output='pos_mask'), False) if has_dense_head(student) else None,
        student_cls=(read(dict(output='cls_logits'), False).detach()
                     if has_dense_head(student) else None),
        teacher_cls=(read(dict(output='cls_logits'), True).detach()
                     if graph.teacher_taps.get('head') == HEAD_TAP
                     and 'cls_logits' in model_outputs(teacher) else None),
        outputs=((lambda name: read(dict(output=name), False).detach())
                 if has_dense_head(student) else None))
