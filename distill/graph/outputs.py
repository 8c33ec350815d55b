"""Heads described by named outputs: what a recipe edge may read, whatever the head's layout.

A recipe edge reads ``dict(output='box_dist')`` instead of "index 1 of the head's forward",
so one recipe serves GFL, ATSS, SALT-Net and later heads. Each head class declares its
outputs (:func:`register_head_outputs`, looked up along the class's MRO, so ``LDHead`` gets
GFL's); an output is either a raw tensor a tap recorded (the head's forward or its own label
assignment, ``get_targets``) or derived from one (decoded boxes, the positive mask).

Every output is returned flat, one row per prior in mmdet's order: ``Tensor[B, N, K]``
(``Tensor[B, N]`` for ``labels`` and ``pos_mask``). A head with ``A`` priors per location
(``num_base_priors``, e.g. RetinaNet's 9 anchors) has ``A`` rows per location, location-major
and anchor-minor, as mmdet's ``grid_priors`` and its ``permute(0, 2, 3, 1).reshape(B, -1, K)``.

Names:
    ``cls_logits``: class logits (GFL-style heads: logits of the joint class-quality score).
    ``box_dist``: the general distribution, ``4 * (reg_max + 1)`` logits per prior (GFL).
    ``box_deltas``: encoded box deltas (ATSS, DDOD, RetinaNet; FCOS/MOD/RTMDet: distances in
    strides).
    ``centerness``: centerness logit (ATSS).
    ``iou``: IoU-branch logit (DDOD). ``quality``: quality logit (MOD: GIoU or centerness).
    ``box_stage1``: decoded coarse boxes ``(x1, y1, x2, y2)`` of a two-stage head (SALT-Net).
    ``boxes``: decoded final boxes ``(x1, y1, x2, y2)``, image pixels.
    ``labels``: assigned labels (``num_classes`` = background) from the head's assignment.
    ``pos_mask``: ``labels`` in ``[0, num_classes)``.
    ``gt_boxes``: the assigned GT box of each prior ``(x1, y1, x2, y2)`` (valid on positives).

Every detector with a neck also has ``neck``: the FPN outputs, kept as per-level maps
``list[Tensor[B, C, H_l, W_l]]`` (feature imitation, e.g. PKD), not flattened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from mmdet.structures.bbox import distance2bbox
from torch import Tensor, nn

from distill.regions.base import flatten_levels

#: The taps every graph installs: the head's forward and its label assignment.
HEAD_TAP = dict(type='ModuleOutputs', source='bbox_head')
ASSIGN_TAP = dict(type='ModuleMethodOutputs', source='bbox_head.get_targets')
#: The tap of the neck's outputs (feature edges; a cross-head path entering at depth 0).
NECK_TAP = dict(type='ModuleOutputs', source='neck')


@dataclass(frozen=True)
class HeadOutput:
    """One named output of a head.

    Attributes:
        tap (str): ``'head'`` (its forward) or ``'assign'`` (its ``get_targets``).
        index (int): Position in what the tap recorded.
        derive (callable, optional): ``fn(head, raw (Tensor[B, N, K]), priors (Tensor[N, 4]),
            strides (Tensor[N])) -> Tensor``: computes the output from the raw one.
        doc (str): What it is (said in error messages).
        maps (bool): Kept as per-level maps ``list[Tensor[B, C, H, W]]`` (not flattened).
        flatten (callable, optional): ``fn(head, raw, num_images) -> Tensor[B, N, ...]``: how
            the raw record becomes one row per prior, for a record in neither default layout
            (head maps ``list[Tensor[B, A * K, H, W]]``; targets ``list[Tensor[B, N_l, ...]]``),
            e.g. FCOS's targets, concatenated over the images per level.
    """

    tap: str
    index: int | None
    doc: str
    derive: Callable | None = None
    maps: bool = False
    flatten: Callable | None = None


def _centres(priors: Tensor) -> Tensor:
    return (priors[:, :2] + priors[:, 2:]) / 2


def ltrb_to_boxes(ltrb: Tensor, priors: Tensor, strides: Tensor) -> Tensor:
    """Boxes from distances to the four sides, in strides, around each prior's centre.

    Args:
        ltrb (Tensor[B, N, 4]): ``(left, top, right, bottom)`` distances in strides.
        priors (Tensor[N, 4]): Prior boxes (their centres are the predicting locations).
        strides (Tensor[N]): Stride of each prior's level.

    Returns:
        Tensor[B, N, 4]: ``(x1, y1, x2, y2)`` in image pixels.
    """
    return distance2bbox(_centres(priors).to(ltrb), ltrb * strides.to(ltrb)[:, None])


def dist_to_ltrb(dist: Tensor, reg_max: int) -> Tensor:
    """GFL's integral: the expected distance of each side's distribution (GFL Eq. 4).

    Args:
        dist (Tensor[B, N, 4 * (reg_max + 1)]): Box distribution logits.

    Returns:
        Tensor[B, N, 4]: Distances in strides.
    """
    prob = dist.reshape(*dist.shape[:-1], 4, reg_max + 1).softmax(-1)
    return prob @ torch.arange(reg_max + 1, dtype=prob.dtype, device=prob.device)


def _dist_boxes(head, dist, priors, strides):
    return ltrb_to_boxes(dist_to_ltrb(dist, head.reg_max), priors, strides)


def _stage1_boxes(head, ltrb, priors, strides):
    return ltrb_to_boxes(ltrb, priors, strides)


def decode_deltas(head, deltas, priors, strides):
    """A ``derive`` for declarations: encoded box deltas decoded by the head's ``bbox_coder``.

    Args:
        head (nn.Module): The head (``bbox_coder``).
        deltas (Tensor[B, N, 4]): Flat deltas, one row per prior.
        priors (Tensor[N, 4]): The priors (anchors) in mmdet's flat order.
        strides (Tensor[N]): Unused.

    Returns:
        Tensor[B, N, 4]: Boxes ``(x1, y1, x2, y2)`` in input-image pixels.
    """
    return head.bbox_coder.decode(priors.to(deltas).expand(len(deltas), -1, -1), deltas)


def positives_of_labels(head, labels, priors, strides):
    """A ``derive`` for declarations: the positives of assigned labels.

    Args:
        labels (Tensor[B, N]): Assigned labels, ``num_classes`` for background.

    Returns:
        Tensor[B, N] (bool): ``0 <= label < num_classes``.
    """
    return (labels >= 0) & (labels < head.num_classes)


def decode_box_targets(head, targets, priors, strides):
    """A ``derive`` for declarations: an anchor head's box targets as boxes (decoded by its
    ``bbox_coder`` unless ``reg_decoded_bbox``: then they are boxes already).

    Args:
        targets (Tensor[B, N, 4]): ``get_targets``' box targets, one row per prior.

    Returns:
        Tensor[B, N, 4]: GT boxes in input-image pixels.
    """
    if head.reg_decoded_bbox:
        return targets
    return decode_deltas(head, targets, priors, strides)


_ASSIGNED = dict(
    labels=HeadOutput('assign', 1, 'assigned labels (from the head\'s own label assignment)'),
    pos_mask=HeadOutput('assign', 1, 'assigned positives', positives_of_labels),
)
GFL_OUTPUTS = dict(
    cls_logits=HeadOutput('head', 0, 'class (joint class-quality) logits'),
    box_dist=HeadOutput('head', 1, 'box distributions, 4 x (reg_max + 1) logits'),
    boxes=HeadOutput('head', 1, 'decoded boxes', _dist_boxes),
    gt_boxes=HeadOutput('assign', 3, 'assigned GT boxes'),
    **_ASSIGNED)
ATSS_OUTPUTS = dict(
    cls_logits=HeadOutput('head', 0, 'class logits'),
    box_deltas=HeadOutput('head', 1, 'encoded box deltas'),
    centerness=HeadOutput('head', 2, 'centerness logits'),
    boxes=HeadOutput('head', 1, 'decoded boxes', decode_deltas),
    gt_boxes=HeadOutput('assign', 3, 'assigned GT boxes', decode_box_targets),
    **_ASSIGNED)
#: SALT-Net: GFL's outputs from its stage 2, plus the stage-1 coarse boxes (forward index 2).
SALT_OUTPUTS = dict(
    GFL_OUTPUTS,
    box_stage1=HeadOutput('head', 2, 'decoded stage-1 (coarse) boxes', _stage1_boxes))

_REGISTRY: dict = {
    'GFLHead': GFL_OUTPUTS, 'ATSSHead': ATSS_OUTPUTS, 'SALTHead': SALT_OUTPUTS}


def register_head_outputs(head_class: str, outputs) -> None:
    """Declare the named outputs of a head class (by class name; subclasses inherit them).

    Args:
        head_class (str): The class name.
        outputs (dict[str, HeadOutput] | callable): The outputs, or ``fn(head) -> dict`` when
            they depend on the head's options (e.g. deltas or a distribution).
    """
    _REGISTRY[head_class] = outputs if callable(outputs) else dict(outputs)


def head_outputs(head: nn.Module) -> dict[str, HeadOutput]:
    """The named outputs of a head instance: the declaration nearest along its class's MRO.

    Returns:
        dict: name -> :class:`HeadOutput` (empty for an undeclared head).
    """
    for cls in type(head).__mro__:
        if cls.__name__ in _REGISTRY:
            outputs = _REGISTRY[cls.__name__]
            return outputs(head) if callable(outputs) else outputs
    return {}


#: The neck's outputs (any detector with a neck): per-level maps.
NECK_OUTPUT = HeadOutput('neck', None, 'FPN outputs, per-level maps', maps=True)


def model_outputs(model: nn.Module) -> dict[str, HeadOutput]:
    """The named outputs an edge may read on a detector: its head's, and ``neck``."""
    outputs = dict(head_outputs(model.bbox_head)) if hasattr(model, 'bbox_head') else {}
    if getattr(model, 'neck', None) is not None:
        outputs['neck'] = NECK_OUTPUT
    return outputs


def describe(head: nn.Module) -> str:
    """``'SALTHead (outputs: boxes, box_dist, ...)'`` for messages."""
    names = sorted(head_outputs(head))
    return f'{type(head).__name__} (outputs: {", ".join(names) if names else "none declared"})'


def flat_priors_and_strides(head: nn.Module, sizes, device) -> tuple[Tensor, Tensor]:
    """The head's priors of all levels and each prior's stride.

    Returns:
        tuple: ``priors (Tensor[N, 4])`` (points become zero-size boxes) and
        ``strides (Tensor[N])``; ``N = sum_l H_l W_l A``, in the rows' order of
        :func:`flatten_record` (the generator's: each location's ``A`` anchors together, so a
        level's stride is repeated over all its rows).
    """
    gen = head.prior_generator
    priors = gen.grid_priors(sizes, device=device)
    priors = [p if p.shape[-1] == 4 else torch.cat([p[:, :2], p[:, :2]], -1) for p in priors]
    strides = torch.cat([torch.full((len(p),), float(s[0]), device=device)
                         for p, s in zip(priors, gen.strides)])
    return torch.cat(priors), strides


def priors_per_location(head: nn.Module) -> int:
    """``A``: the head's priors per location (``num_base_priors``; 1 where it has none)."""
    return int(getattr(head, 'num_base_priors', 1) or 1)


def flatten_record(value, spec: HeadOutput | str, head: nn.Module | None = None,
                   num_images: int | None = None) -> Tensor:
    """One row per prior (in mmdet's order) from what a tap recorded.

    Args:
        value: Head maps ``list[Tensor[B, A * K, H, W]]`` (tap ``'head'``) or assignment
            targets ``list[Tensor[B, N_l, ...]]`` per level (tap ``'assign'``).
        spec (HeadOutput | str): The output (its own ``flatten`` wins), or just its tap.
        head (nn.Module, optional): The head that recorded it (its priors per location; None:
            one).
        num_images (int, optional): ``B``, for a ``flatten`` that needs it.

    Returns:
        Tensor[B, N, ...].
    """
    tap = spec if isinstance(spec, str) else spec.tap
    if not isinstance(spec, str) and spec.flatten is not None:
        return spec.flatten(head, value, num_images)
    if tap == 'head':
        return flatten_levels(value, 1 if head is None else priors_per_location(head))
    return torch.cat(list(value), dim=1)


def flatten_raw(value, manager, tap: str, head: nn.Module | None) -> Tensor:
    """A raw tap reference's record, one row per prior: the dense head's forward and label
    assignment as the named outputs are (``A`` priors per location, e.g. RetinaNet's 9);
    any other module's maps one row per location.

    Args:
        value: What the tap recorded (per-level maps or assignment targets).
        manager (RecorderManager): The model's recorders (the tap's source).
        tap (str): The tap's name.
        head (nn.Module | None): The model's dense head (None: two-stage).

    Returns:
        Tensor[B, N, ...].
    """
    source = getattr(manager.get_recorder(tap), 'source', None)
    kind = {HEAD_TAP['source']: 'head', ASSIGN_TAP['source']: 'assign'}.get(source)
    if kind is None or head is None:
        return flatten_levels(value)
    return flatten_record(value, kind, head)
