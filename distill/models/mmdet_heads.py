"""mmdet 3.3's own dense heads as nodes of the teacher-student graph: their named outputs.

Nothing here changes a head; each declaration says where an output lies in what the head's
``forward`` and its ``get_targets`` return, and in which unit (checked against mmdet 3.3's
sources; the tests compare with mmdet's own code):

- ``RetinaHead``: ``A`` anchors per location (``num_base_priors``, 9 by default), so every
  output has ``A`` rows per location (:func:`~distill.regions.base.flatten_levels`). Class
  logits and encoded box deltas (its ``bbox_coder``); ``get_targets`` is ``AnchorHead``'s:
  labels at 0, box targets at 2 (encoded unless ``reg_decoded_bbox``).
- ``FCOSHead``: distances ``(l, t, r, b)``. With ``norm_on_bbox`` its forward gives them in
  strides in training but in pixels in eval (``if not self.training: bbox_pred *= stride``):
  ``box_deltas`` is in strides either way, so a teacher (eval) and a student (train) compare
  like with like. ``get_targets`` concatenates each level over the images (``[B * N_l]``) and
  divides the distances by the stride with ``norm_on_bbox``.
- ``TOODHead``: its forward gives class *probabilities* (``sqrt(sigmoid(cls) *
  sigmoid(prob))``, already activated) and decoded boxes divided by the stride. ``cls_logits``
  is their logit, the probabilities clamped to ``[eps, 1 - eps]`` (:data:`PROB_EPS`) so that
  it is finite; ``boxes`` are the boxes times the stride. It has no box deltas.
- ``RTMDetHead`` (and ``RTMDetSepBNHead``): class logits (with objectness: the logit of the
  geometric mean, as mmdet) and distances ``(l, t, r, b)`` times the stride (pixels);
  ``box_deltas`` are them in strides.

TOOD's and RTMDet's ``get_targets`` give the anchors first: labels at 1, decoded GT boxes at 3.
"""

from __future__ import annotations

import torch
from mmdet.structures.bbox import distance2bbox
from torch import Tensor

from distill.graph.outputs import (
    HeadOutput,
    _centres,
    decode_box_targets,
    decode_deltas,
    ltrb_to_boxes,
    positives_of_labels,
    register_head_outputs,
)

#: TOOD's probabilities are clamped to ``[PROB_EPS, 1 - PROB_EPS]`` before their logit, so that
#: the logits are finite: within +-13.82 (float32 rounds 1 - 1e-6 to 0.99999899: 13.80).
PROB_EPS = 1e-6


def prob_logits(probs: Tensor, eps: float = PROB_EPS) -> Tensor:
    """The logits of probabilities, clamped so that they are finite.

    Args:
        probs (Tensor[...]): Probabilities in ``[0, 1]``.

    Returns:
        Tensor[...]: ``log(p / (1 - p))`` of ``p = clamp(probs, eps, 1 - eps)``.
    """
    return torch.logit(probs.clamp(eps, 1 - eps))


# ---------------------------------------------------------------------------- RetinaHead
RETINA_OUTPUTS = dict(
    cls_logits=HeadOutput('head', 0, 'class logits (A anchors per location)'),
    box_deltas=HeadOutput('head', 1, 'encoded box deltas (the head\'s bbox_coder)'),
    boxes=HeadOutput('head', 1, 'decoded boxes', decode_deltas),
    labels=HeadOutput('assign', 0, 'assigned labels (the head\'s own label assignment)'),
    label_weights=HeadOutput('assign', 1, 'label weights of the assignment (0: anchors it '
                             'ignores, IoU between neg_iou_thr and pos_iou_thr)'),
    pos_mask=HeadOutput('assign', 0, 'assigned positives', positives_of_labels),
    gt_boxes=HeadOutput('assign', 2, 'assigned GT boxes', decode_box_targets),
)


# ------------------------------------------------------------------------------ FCOSHead
def fcos_targets(head, levels: list[Tensor], num_images: int) -> Tensor:
    """FCOS's targets, one row per point: each level ``[B * N_l, ...]`` (images concatenated)
    becomes ``[B, N_l, ...]``, then the levels are concatenated.

    Returns:
        Tensor[B, N, ...].
    """
    return torch.cat([t.reshape(num_images, -1, *t.shape[1:]) for t in levels], dim=1)


def fcos_ltrb(head, raw: Tensor, priors: Tensor, strides: Tensor) -> Tensor:
    """FCOS's forward distances in strides, whatever the mode the head ran in.

    Args:
        raw (Tensor[B, N, 4]): The forward's ``bbox_pred``: in strides for a training head
            with ``norm_on_bbox``; in pixels in eval (mmdet multiplies by the stride there) or
            without ``norm_on_bbox`` (``exp``).
        strides (Tensor[N]): Each point's stride.

    Returns:
        Tensor[B, N, 4]: ``(l, t, r, b)`` in strides.
    """
    # read in the step that recorded it: the head is still in the mode its forward ran in
    if head.norm_on_bbox and head.training:
        return raw
    return raw / strides.to(raw)[:, None]


def _fcos_boxes(head, raw, priors, strides):
    return ltrb_to_boxes(fcos_ltrb(head, raw, priors, strides), priors, strides)


def _fcos_gt_boxes(head, ltrb, priors, strides):
    # targets: in strides with norm_on_bbox (divided per level), else pixels
    scale = strides.to(ltrb)[:, None] if head.norm_on_bbox else 1.0
    return distance2bbox(_centres(priors).to(ltrb), ltrb * scale)


FCOS_OUTPUTS = dict(
    cls_logits=HeadOutput('head', 0, 'class logits'),
    box_deltas=HeadOutput('head', 1, 'distances (l, t, r, b) in strides', fcos_ltrb),
    boxes=HeadOutput('head', 1, 'decoded boxes', _fcos_boxes),
    centerness=HeadOutput('head', 2, 'centerness logits'),
    labels=HeadOutput('assign', 0, 'assigned labels (FCOS ranges and centre sampling)',
                      flatten=fcos_targets),
    pos_mask=HeadOutput('assign', 0, 'assigned positives', positives_of_labels,
                        flatten=fcos_targets),
    gt_boxes=HeadOutput('assign', 1, 'assigned GT boxes', _fcos_gt_boxes,
                        flatten=fcos_targets),
)


# ------------------------------------------------------------------------------ TOODHead
def _tood_logits(head, probs, priors, strides):
    return prob_logits(probs)


def _times_stride(head, raw, priors, strides):
    return raw * strides.to(raw)[:, None]


#: TOOD's and RTMDet's ``get_targets``: ``(anchors, labels, label_weights, bbox_targets,
#: metrics, ...)`` per level, the box targets decoded GT boxes (pixels).
_ANCHORS_FIRST = dict(
    labels=HeadOutput('assign', 1, 'assigned labels (task-aligned assignment)'),
    pos_mask=HeadOutput('assign', 1, 'assigned positives', positives_of_labels),
    gt_boxes=HeadOutput('assign', 3, 'assigned GT boxes'),
)
TOOD_OUTPUTS = dict(
    cls_logits=HeadOutput('head', 0, f'class logits: the logit of TOOD\'s class probabilities '
                                     f'(its forward activates them), clamped to [{PROB_EPS:g}, '
                                     f'1 - {PROB_EPS:g}]', _tood_logits),
    boxes=HeadOutput('head', 1, 'decoded boxes (TOOD\'s forward gives them in strides)',
                     _times_stride),
    **_ANCHORS_FIRST,
)


# ---------------------------------------------------------------------------- RTMDetHead
def _rtmdet_ltrb(head, raw, priors, strides):
    return raw / strides.to(raw)[:, None]


def _rtmdet_boxes(head, raw, priors, strides):
    return distance2bbox(_centres(priors).to(raw), raw)


RTMDET_OUTPUTS = dict(
    cls_logits=HeadOutput('head', 0, 'class logits'),
    box_deltas=HeadOutput('head', 1, 'distances (l, t, r, b) in strides (RTMDet\'s forward '
                                     'gives pixels)', _rtmdet_ltrb),
    boxes=HeadOutput('head', 1, 'decoded boxes', _rtmdet_boxes),
    **_ANCHORS_FIRST,
)

register_head_outputs('RetinaHead', RETINA_OUTPUTS)
register_head_outputs('FCOSHead', FCOS_OUTPUTS)
register_head_outputs('TOODHead', TOOD_OUTPUTS)
register_head_outputs('RTMDetHead', RTMDET_OUTPUTS)  # RTMDetSepBNHead: a subclass
