"""What an edge reads and how it is normalised: tap records, the ``avg_factor`` of a region,
per-level region maps for feature edges."""

from __future__ import annotations

import torch
from mmdet.utils import reduce_mean
from mmrazor.models.task_modules.recorder import RecorderManager
from torch import Tensor

from distill.errors import ConfigError


def read_tap(manager: RecorderManager, spec: dict):
    """What a tap reference ``dict(tap, index=None, record=0)`` recorded in the last step."""
    return manager.get_recorder(spec['tap']).get_record_data(
        record_idx=spec.get('record', 0), data_idx=spec.get('index'))


def edge_normaliser(w: Tensor, normalize, pos_mask: Tensor | None = None) -> Tensor:
    """The ``avg_factor`` of an edge whose region keeps the priors of weights ``w``.

    Args:
        w (Tensor[M]): The positive region weights of this GPU's batch.
        normalize (str | float): ``'weight'``: the region's total weight (a weighted mean, as
            GFL normalises its box losses); ``'count'``: its number of priors (the weights then
            also scale the loss, e.g. the student's confidence); ``'positives'``: the number
            of the student's assigned positives, whatever the region (the normaliser of the
            student's own classification loss: CrossKD's published code); a number: that
            constant, per GPU and per batch, as the published LD code (4 for Main LD, 16 for
            VLR LD).
        pos_mask (Tensor[B, N], optional): The student's positives (for ``'positives'``).

    Returns:
        Tensor[]: ``'weight'``, ``'count'`` and ``'positives'`` are summed over the batch and
        averaged over the GPUs, so the loss does not grow with the batch size or the GPU count
        (the published LD code's bug, which a constant reproduces on purpose). ``'positives'``
        is at least 1, as mmdet's heads count them (``max(reduce_mean(num_pos), 1.0)``, e.g.
        ``GFLHead.loss_by_feat``) and the published CrossKD code: a batch without a student
        positive divides by 1, not by a float epsilon.
    """
    if not isinstance(normalize, str):
        return w.new_tensor(float(normalize))
    if normalize == 'positives':
        norm = pos_mask.sum().to(w.dtype)
        return reduce_mean(norm.detach()).clamp(min=1.0)
    norm = w.sum() if normalize == 'weight' else w.new_tensor(float(w.numel()))
    # DDP averages gradients over ranks; reduce_mean makes each rank's denominator the global
    # one over the world size, as mmdet does. No clamp at 1 (mmdet's habit for counts): a total
    # weight below 1 (confidences of ~0.01 early in training) or fewer priors than GPUs would
    # then turn the mean into a sum that depends on the per-GPU batch. Only an empty region
    # (numerator 0) meets the eps floor, and gives 0.
    return reduce_mean(norm.detach()).clamp(min=torch.finfo(norm.dtype).eps)


def cross_key(ref: dict) -> tuple:
    """What identifies a cross-head path in an edge side (its fields but the output)."""
    return tuple(sorted((k, v) for k, v in ref.items() if k != 'output'))


def split_levels(weight: Tensor, maps: list[Tensor]) -> list[Tensor]:
    """Region weights ``Tensor[B, N]`` as per-level maps ``Tensor[B, 1, H_l, W_l]``.

    With ``A`` priors per location (``N = A sum_l H_l W_l``, e.g. RetinaNet's anchors, each
    location's ``A`` rows together) a location weighs as its heaviest prior: it is in the
    region if any of its priors is (the regions of feature edges, all, GT boxes, FGD's
    foreground, give the ``A`` priors of a location one value anyway).
    """
    sizes = [tuple(m.shape[-2:]) for m in maps]
    cells = sum(h * w for h, w in sizes)
    if cells == 0 or weight.shape[1] % cells:
        raise ValueError(f'the neck maps (sizes {sizes}) are not the head\'s levels '
                         f'({weight.shape[1]} priors): a feature edge needs a neck output per '
                         f'head level')
    a = weight.shape[1] // cells
    parts = weight.split([h * w * a for h, w in sizes], dim=1)
    return [p.reshape(len(p), h * w, a).amax(-1).reshape(len(p), 1, h, w)
            for p, (h, w) in zip(parts, sizes)]


def fill_neck_width(edge: dict, student, teacher, reads_teacher: bool, source: str) -> dict:
    """A feature loss with modules per FPN level (MGD's generation blocks, FGD's GcBlocks)
    left at ``channels=None`` / ``num_levels=None`` gets them from the neck whose maps it
    compares: the teacher's (the student's maps pass the graph's 1x1 neck adapter first), or
    the student's own when the edge reads no teacher. One recipe then serves every pair.

    Args:
        edge (dict): The edge config; returned unchanged when neither field is None.
        student, teacher: The built detectors (``teacher`` None for a teacherless run).
        reads_teacher (bool): Whether the edge's teacher side is the teacher.
        source (str): The recipe file, for the error message.

    Returns:
        dict: The edge with a copy of its ``loss`` holding both values.
    """
    loss = edge['loss']
    unset = isinstance(loss, dict) and any(
        k in loss and loss[k] is None for k in ('channels', 'num_levels'))
    if not unset:
        return edge
    model = teacher if reads_teacher and teacher is not None else student
    neck = getattr(model, 'neck', None)
    if neck is None or not hasattr(neck, 'out_channels'):
        raise ConfigError(f'{source}: edge {edge["name"]!r}: loss {loss.get("type")} has '
                          f'channels=None / num_levels=None, read from the neck, and '
                          f'{type(model).__name__} has no neck with out_channels: give both')
    # FPN-like necks say how many maps they return (num_outs); PAFPNs return one per input
    levels = getattr(neck, 'num_outs', None) or len(neck.in_channels)
    filled = dict(loss)
    if filled.get('channels', 0) is None:
        filled['channels'] = neck.out_channels
    if filled.get('num_levels', 0) is None:
        filled['num_levels'] = levels
    return dict(edge, loss=filled)
