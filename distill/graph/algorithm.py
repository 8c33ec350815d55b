"""DistillGraph: the one mmrazor algorithm behind every run (baseline, KD/LD, self-distillation).

Nodes: the student (``architecture``) and optionally a teacher detector. Taps: mmrazor recorders
on either model (head outputs, label assignment), read through each head's named outputs
(:mod:`distill.graph.outputs`). Edges: ``loss(student output, teacher output)`` on a region of
the student's priors, normalised by the region's total weight over the batch and all GPUs.
Without edges the graph is the plain student; an edge whose teacher side says
``of='student'`` reads the student itself, detached (self-distillation, e.g. SDR), and composes
with edges from an external teacher in the same run.

The teacher runs only ``extract_feat`` and, where an edge or a region reads it, its head's
``forward``, in eval mode under ``no_grad``: no teacher loss and no teacher label assignment
(mmrazor's ``SingleTeacherDistill`` runs both and discards them). It is held outside the
module tree: it is not in the optimizer, not in checkpoints (it is reloaded from
``teacher_ckpt``), not wrapped by DDP, and not touched by ``init_weights``.

Any detector with a neck is a node for feature edges, two-stage ones (no ``bbox_head``: Faster
R-CNN) included; head outputs and the regions built on a head need a dense head
(:mod:`distill.graph.nodes`).
"""

from __future__ import annotations

import copy

import torch
from mmengine.registry import DefaultScope
from mmrazor.models.algorithms.base import BaseAlgorithm
from mmrazor.models.task_modules.recorder import RecorderManager
from mmrazor.registry import MODELS, TASK_UTILS
from torch import Tensor, nn

from distill.checkpoint import load_weights_strict
from distill.errors import ConfigError, DistillError
from distill.graph import cross
from distill.graph.edges import cross_key, edge_normaliser, fill_neck_width, read_tap, split_levels
from distill.graph.finite import NonFiniteLossError, check_finite  # noqa: F401 (re-export)
from distill.graph.inherit import check_inherit, inherit_from_teacher
from distill.graph.nodes import node_taps, region_context, runs_head
from distill.graph.output_check import check_outputs, check_regions, check_tap_sources
from distill.graph.outputs import (
    ASSIGN_TAP,
    HEAD_TAP,
    NECK_TAP,
    flat_priors_and_strides,
    flatten_raw,
    flatten_record,
    model_outputs,
)
from distill.graph.pair_check import check_pair
from distill.graph.recipe_check import check_edges, reads_teacher
from distill.graph.rng import own_stream
from distill.graph.weight_schedule import edge_factor, schedules_of, training_progress
from distill.regions.base import RegionContext

#: Default taps: the head's forward and its label assignment (``get_targets``). Edges read
#: them through the head's named outputs (:mod:`distill.graph.outputs`). A student without a
#: dense head records its neck instead; a teacher's head only where something reads it
#: (:func:`~distill.graph.nodes.node_taps`).
DEFAULT_STUDENT_TAPS = dict(head=HEAD_TAP, assign=ASSIGN_TAP)
DEFAULT_TEACHER_TAPS = dict(head=HEAD_TAP)
def _in_scope(cfg, scope: str):
    """``cfg`` with ``_scope_`` defaulting to ``scope`` (dicts only; modules pass through)."""
    if isinstance(cfg, dict) and '_scope_' not in cfg and '.' not in str(cfg.get('type', '')):
        cfg = dict(cfg, _scope_=scope)
    return cfg


def _build(cfg, registry):
    return registry.build(copy.deepcopy(cfg)) if isinstance(cfg, dict) else cfg


@MODELS.register_module()
class DistillGraph(BaseAlgorithm):
    """A teacher-student graph (an mmrazor algorithm).

    Args:
        architecture (dict | BaseModel): The student detector (a config's ``_scope_`` defaults
            to ``'mmdet'``).
        teacher (dict | nn.Module, optional): The teacher detector (same scope default); None:
            baseline or self-distillation.
        teacher_ckpt (str, optional): Teacher weights (path or URL); required with a teacher.
        edges (list[dict]): Each ``dict(name, loss, student, teacher, region[, normalize,
            targets])``: ``loss`` a registered loss (e.g. ``dict(type='LDLoss', T=10)``),
            ``student`` / ``teacher`` a named head output ``dict(output='box_dist')`` (see
            :mod:`distill.graph.outputs`; the teacher side reads the teacher, or the student
            itself with ``of='student'``: self-distillation; the student side may read the
            teacher head run on the student's features, ``of='cross'``: CrossKD, see
            :mod:`distill.graph.cross`), ``dict(output='neck')`` (the FPN maps, feature
            imitation) or a raw tap reference ``dict(tap='head', index=1)``;
            ``region`` a registered region (``MainRegion``, ``VLRRegion``, ``GTBoxRegion``,
            ``AllRegion``, ``TeacherScoreRegion``; for ``neck`` maps, a weight per location);
            ``targets`` extra loss inputs ``dict(<loss kwarg>=<student output name>)``,
            detached (e.g. SDR's ``gt_boxes``);
            ``normalize`` ``'weight'`` (default: divide by the region's total weight),
            ``'count'`` (by its number of priors), ``'positives'`` (by the student's
            positives) or a number (a constant per GPU and batch: the published LD code's
            scale, which grows with the batch size), see
            :func:`~distill.graph.edges.edge_normaliser`; feature (``neck``) edges are means
            per level instead.
            Where the student's and the teacher's channels differ (a cross-head path, the
            neck), a 1x1 adapter is trained with the student (``adapters``; not exported).
        student_taps (dict, optional): Extra mmrazor recorder configs on the student (raw
            tap references; :data:`DEFAULT_STUDENT_TAPS` are installed where it has a dense
            head, its neck's tap where it has none).
        teacher_taps (dict, optional): Extra recorder configs on the teacher
            (:data:`DEFAULT_TEACHER_TAPS` where an edge or a region reads its head).
        anchor_free_scale (float): Side of the preset square anchor, in strides, that stands in
            for priors when the student is anchor-free (LD paper, VLR).
        pair_names (tuple[str, str]): How errors name the student and the teacher (config files).
        edges_source (str): How errors name the edges (the recipe file).
        inherit_from_teacher (tuple[str, ...]): Student modules initialised from the
            teacher's where shapes match (FGD's inheriting start, e.g. ``('neck',
            'bbox_head')``; :mod:`distill.graph.inherit`). Default: none, a cold start.
        data_preprocessor (dict, optional): Default: the student's.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self, architecture, teacher=None, teacher_ckpt: str | None = None,
                 edges: list | tuple = (), student_taps: dict | None = None,
                 teacher_taps: dict | None = None, anchor_free_scale: float = 8.0,
                 pair_names: tuple[str, str] = ('student', 'teacher'),
                 edges_source: str = 'edges', inherit_from_teacher=(),
                 data_preprocessor=None, init_cfg=None):
        student_taps = dict(DEFAULT_STUDENT_TAPS, **(student_taps or {}))
        teacher_taps = dict(DEFAULT_TEACHER_TAPS, **(teacher_taps or {}))
        edge_cfgs = [dict(e) if isinstance(e, dict) else e for e in edges]
        # Before anything is built: a recipe mistake names the recipe file and the edge.
        check_edges(edge_cfgs, edges_source, student_taps, teacher_taps)
        inherit = check_inherit(inherit_from_teacher, edges_source)
        if inherit and teacher is None:
            raise ConfigError(f'{edges_source}: inherit_from_teacher={list(inherit)} needs a '
                              f'teacher, and this run has none')
        # Built the same whatever default scope the caller left current (plain Python,
        # an mmdet runner, tests): our losses, regions and recorders live in mmrazor's
        # registries, the detectors in mmdet's.
        with DefaultScope.overwrite_default_scope('mmrazor'):
            super().__init__(_in_scope(architecture, 'mmdet'),
                             _in_scope(data_preprocessor, 'mmdet'), init_cfg)
            self._inherit, self._inherit_source = inherit, edges_source
            # The student was built first, from the run's seed; everything after it draws from
            # a stream of its own, so that the student's init (init_weights, later) and the data
            # order are the same for every recipe at one seed (paired comparisons).
            with own_stream('distill.graph.extra_modules'):
                self._build_graph(teacher, teacher_ckpt, edge_cfgs, edges, student_taps,
                                  teacher_taps, anchor_free_scale, pair_names, edges_source)

    def _build_graph(self, teacher, teacher_ckpt, edge_cfgs, edges, student_taps, teacher_taps,
                     anchor_free_scale, pair_names, edges_source) -> None:
        """Everything but the student: the teacher (loaded), the edges' losses and regions, the
        adapters and the taps (see :class:`DistillGraph` for the arguments)."""
        self.teacher_ckpt = teacher_ckpt
        if teacher is not None:
            teacher = _build(_in_scope(teacher, 'mmdet'), MODELS)
        self.edge_cfgs = [fill_neck_width(e, self.architecture, teacher, reads_teacher(e),
                                          edges_source) for e in edge_cfgs]
        self.pair_names = tuple(pair_names)
        check_outputs(self.edge_cfgs, self.architecture, teacher, self.pair_names,
                      edges_source)
        self.regions = {e['name']: _build(e['region'], TASK_UTILS) for e in self.edge_cfgs}
        check_regions(self.edge_cfgs, self.regions, self.architecture, teacher,
                      self.pair_names, edges_source)
        if teacher is not None:
            # a cross-head output is the teacher head's own, compared with the teacher's:
            # the student's classes and bins need not match for it
            used = {e['teacher'].get('output') for e in edge_cfgs
                    if reads_teacher(e) and e['student'].get('of') != 'cross'}
            # raw tap references: which output they read is unknown, so check every field
            check_pair(self.architecture, teacher, *pair_names,
                       outputs=None if None in used else used)
            if teacher_ckpt is None:
                raise ValueError(f'a teacher ({pair_names[1]}) needs teacher_ckpt: a randomly '
                                 f'initialised teacher teaches nothing')
            load_weights_strict(teacher, teacher_ckpt, role='teacher',
                                config=f'the teacher config {pair_names[1]}')
            teacher.eval()
            teacher.requires_grad_(False)
        # Held outside the module tree on purpose (see the module docstring); _apply moves it.
        object.__setattr__(self, '_teacher', teacher)

        self.edge_losses = nn.ModuleDict(
            {e['name']: _build(e['loss'], MODELS) for e in self.edge_cfgs})

        #: True when some edge reads the student as its teacher (self-distillation).
        self.self_distill = any(not reads_teacher(e) for e in edge_cfgs)
        self.anchor_free_scale = anchor_free_scale
        #: Trained 1x1 adapters (cross-head paths, the neck) where channel counts differ:
        #: in the optimizer with the student, not in the exported student.
        self.adapters = nn.ModuleDict()
        self.cross_paths: dict = {}
        student_taps, teacher_taps = node_taps(self.architecture, teacher, edge_cfgs,
                                               self.regions, student_taps, teacher_taps)
        for edge in edge_cfgs:
            self._plan_taps(edge, teacher, student_taps, teacher_taps,
                            f'{edges_source}: edge {edge["name"]!r}')
        self.student_recorders = RecorderManager(student_taps if edges else {})
        #: The teacher's recorder configs, by name (what a teacher cache stores).
        self.teacher_taps = teacher_taps if edges and teacher is not None else {}
        self.teacher_recorders = RecorderManager(self.teacher_taps)
        #: Whether the teacher's step runs its dense head (some tap records in it).
        self._teacher_head = runs_head(self.teacher_taps)
        #: A :class:`~distill.graph.teacher_cache.TeacherCache` (set by TeacherCacheHook):
        #: the teacher's records of a batch read back instead of its forward.
        self.teacher_cache = None
        for manager, model, side in ((self.student_recorders, self.architecture, 'student'),
                                     (self.teacher_recorders, teacher, 'teacher')):
            if model is not None:
                check_tap_sources(manager, model, side, pair_names, edges_source)
                manager.initialize(model)
        self._prior_cache: dict = {}
        #: The region weights (detached, ``Tensor[B, N]``) of the last step, per edge name: for
        #: inspection and drawing (``tools/draw_regions.py``).
        self.last_regions: dict[str, Tensor] = {}

    def _plan_taps(self, edge: dict, teacher, student_taps: dict, teacher_taps: dict,
                   where: str) -> None:
        """The extra taps and adapters an edge needs: the pre-activation tower features of a
        cross-head path, the neck of a feature edge."""
        ref = edge['student']
        if ref.get('of') == 'cross':
            path = cross.resolve(ref, self.architecture, teacher, self.pair_names, where)
            self.cross_paths[cross_key(ref)] = path
            student_taps.update(cross.hold_taps(self.architecture.bbox_head, path.k_s))
            teacher_taps.update(cross.hold_taps(teacher.bbox_head, path.k_t))
            if path.reads_input:
                student_taps.update(cross.hold_taps(self.architecture.bbox_head, 0))
                teacher_taps.update(cross.hold_taps(teacher.bbox_head, 0))
            for name, conv in cross.adapters_for(path, self.architecture.bbox_head,
                                                 teacher.bbox_head).items():
                self.adapters[name] = conv
        for side, taps in (('student', student_taps), ('teacher', teacher_taps)):
            if edge[side].get('output') == 'neck':
                taps['neck'] = NECK_TAP
        if ref.get('output') == 'neck' and reads_teacher(edge):
            c_s, c_t = self.architecture.neck.out_channels, teacher.neck.out_channels
            if c_s != c_t:
                self.adapters['neck'] = nn.Conv2d(c_s, c_t, 1)

    def init_weights(self):
        """The student's own init, then (FGD's inheriting start, where the recipe asks) its
        modules copied from the teacher's. The Runner loads ``load_from`` or a resumed
        checkpoint after this, so neither is overwritten."""
        super().init_weights()
        if self._inherit:
            inherit_from_teacher(self.architecture, self._teacher, self._inherit,
                                 self._inherit_source)

    # ----------------------------------------------------------------- the hidden teacher
    @property
    def teacher(self) -> nn.Module | None:
        """The teacher detector (None for a baseline or self-distillation)."""
        return self._teacher

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self._teacher is not None:
            self._teacher._apply(fn, *args, **kwargs)
        self._prior_cache = {}
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if self._teacher is not None:
            self._teacher.eval()  # BN statistics and dropout of the teacher stay fixed
        return self

    # ----------------------------------------------------------------------- the step
    def loss(self, inputs: Tensor, data_samples=None) -> dict:
        """Student losses (mmdet's names) plus one ``loss_<edge name>`` per edge."""
        if not self.edge_cfgs:
            losses = self.architecture(inputs, data_samples, mode='loss')
            check_finite(losses, self.edge_losses, self.teacher_ckpt)
            return losses
        if self._teacher is not None:
            self._teacher_step(inputs, data_samples)
        with self.student_recorders:
            losses = self.architecture(inputs, data_samples, mode='loss')
            losses.update(self._edge_losses(data_samples))
        self._apply_weight_schedules(losses, inputs)
        check_finite(losses, self.edge_losses, self.teacher_ckpt)
        return losses

    def _apply_weight_schedules(self, losses: dict, inputs: Tensor) -> None:
        """Scale each scheduled edge's loss by its factor in force (logged as
        ``weight_<edge>``; :mod:`distill.graph.weight_schedule`)."""
        scheduled = [(e['name'], s) for e in self.edge_cfgs if (s := schedules_of(e))]
        if not scheduled:
            return
        progress = training_progress()
        if progress is None:
            raise DistillError(f'edge {scheduled[0][0]!r} has a weight_schedule, but no '
                               f'training progress is known: train through an mmengine '
                               f'Runner (its RuntimeInfoHook records iter and epoch)')
        for name, schedules in scheduled:
            factor = edge_factor(schedules, *progress)
            losses[f'loss_{name}'] = losses[f'loss_{name}'] * factor
            losses[f'weight_{name}'] = inputs.new_tensor(factor)

    def _teacher_step(self, inputs: Tensor, data_samples) -> None:
        """Fill the teacher's recorders: from the cache where it holds every image of the
        batch, else by the teacher's forward (whose records the cache then keeps)."""
        cache = self.teacher_cache
        images = cache.image_keys(data_samples) if cache is not None else None
        cached = cache.load(images) if cache is not None else None
        if cached is not None:
            cache.fill(self.teacher_recorders, cached, inputs.device)
            return
        with self.teacher_recorders, torch.no_grad():
            feats = self._teacher.extract_feat(inputs)
            if self._teacher_head:  # feature edges alone: the neck's maps are all it takes
                self._teacher.bbox_head(feats)
        if cache is not None:
            cache.store(self.teacher_recorders, images)

    def _edge_losses(self, data_samples) -> dict:
        flat: dict = {}

        def read(ref: dict, of_teacher: bool):
            """A tap reference or named output, memoised: flat (``Tensor[B, N, ...]``), or
            per-level maps for ``neck``."""
            crossed = ref.get('of') == 'cross'
            on_teacher = of_teacher or crossed
            model = self._teacher if on_teacher else self.architecture
            manager = self.teacher_recorders if on_teacher else self.student_recorders
            key = (of_teacher, tuple(sorted((k, v) for k, v in ref.items()
                                            if k != 'of' or crossed)))
            if key not in flat:
                head = getattr(model, 'bbox_head', None)  # none: two-stage, neck only
                if 'output' not in ref:
                    flat[key] = flatten_raw(read_tap(manager, ref), manager, ref['tap'], head)
                    return flat[key]
                spec = model_outputs(model)[ref['output']]
                if crossed:
                    path = self.cross_paths[cross_key(ref)]
                    if path.key not in flat:  # one cross forward per path and step
                        flat[path.key] = cross.cross_forward(
                            path, self.student_recorders, self.teacher_recorders, head,
                            self.adapters)
                    raw = flat[path.key][spec.index]
                else:
                    raw = read_tap(manager, dict(tap=spec.tap, index=spec.index))
                if spec.maps:
                    flat[key] = list(raw)
                    return flat[key]
                value = flatten_record(raw, spec, head, len(data_samples))
                if spec.derive is not None:
                    value = spec.derive(head, value, *self._flat_priors(head, manager))
                flat[key] = value
            return flat[key]

        ctx = region_context(self, read, data_samples)

        out = {}
        for edge in self.edge_cfgs:
            name = edge['name']
            s = read(edge['student'], False)
            t = read(edge['teacher'], reads_teacher(edge))
            weight = self._region(ctx, edge['region'], name)
            self.last_regions[name] = weight.detach()
            if isinstance(s, list):  # feature maps: a weight per location, a mean per level
                adapter = self.adapters['neck'] if 'neck' in self.adapters else None
                s = [adapter(x) for x in s] if adapter is not None and reads_teacher(edge) else s
                out[f'loss_{name}'] = self.edge_losses[name](
                    s, [x.detach() for x in t], weight=split_levels(weight, s))
                continue
            t = t.detach()
            if s.shape != t.shape:
                raise ValueError(f'edge {name!r}: student {edge["student"]} has shape '
                                 f'{tuple(s.shape)}, teacher {edge["teacher"]} '
                                 f'{tuple(t.shape)}')
            keep = weight > 0
            w = weight[keep]
            avg = edge_normaliser(w, edge.get('normalize', 'weight'), ctx.pos_mask)
            extra = {k: read(dict(output=o), False).detach()[keep]
                     for k, o in (edge.get('targets') or {}).items()}
            out[f'loss_{name}'] = self.edge_losses[name](s[keep], t[keep], weight=w,
                                                         avg_factor=avg, **extra)
        return out

    def _flat_priors(self, head: nn.Module, manager: RecorderManager) -> tuple[Tensor, Tensor]:
        """A head's priors of all levels and their strides, for decoding its boxes."""
        maps = read_tap(manager, dict(tap='head', index=0))
        sizes = tuple(tuple(m.shape[-2:]) for m in maps)
        key = ('flat', id(head), sizes, str(maps[0].device))
        if key not in self._prior_cache:
            self._prior_cache[key] = flat_priors_and_strides(head, sizes, maps[0].device)
        return self._prior_cache[key]

    def _region(self, ctx: RegionContext, cfg, name: str) -> Tensor:
        key = ('region', repr(cfg))
        if key not in ctx.cache:
            ctx.cache[key] = self.regions[name](ctx)
        return ctx.cache[key]
