"""mmdet's ATSS head with the general-distribution box option (LD paper: LD for non-GFL heads).

``ATSSDistHead(box_dist=None)`` is mmdet's ``ATSSHead``, unchanged. ``box_dist=16``: the
regression branch predicts GFL's ``4 x 17`` logits per anchor
(:class:`~distill.models.box_dist.StrideDistanceCoder`, distances in strides from the anchor's
centre), trained by ATSS's own GIoU loss (centerness-weighted, as ATSS) plus DFL, so that LD
can read and teach its ``box_dist``. Everything else (ATSS assignment, focal loss, centerness)
is ATSS's.
"""

from __future__ import annotations

from mmdet.models.dense_heads import ATSSHead
from mmdet.registry import MODELS
from mmdet.utils import reduce_mean

from distill.graph.outputs import ATSS_OUTPUTS, register_head_outputs
from distill.models.box_dist import BoxDistOption, dfl_loss


@MODELS.register_module()
class ATSSDistHead(BoxDistOption, ATSSHead):
    """ATSS with an optional general-distribution box branch.

    Args:
        box_dist (int, optional): None: mmdet's ATSS (deltas); ``reg_max`` (e.g. 16): GFL's
            general distribution. Needs square anchors, one per location.
        loss_dfl (dict): DFL of the distribution (GFL: weight 0.25); used with ``box_dist``.
        **kwargs: ``ATSSHead``'s arguments.
    """

    def __init__(self, *args, box_dist: int | None = None,
                 loss_dfl: dict = dict(type='DistributionFocalLoss', loss_weight=0.25),
                 **kwargs):
        self.box_dist_reg_max = box_dist  # read by _init_layers, which super().__init__ calls
        super().__init__(*args, **kwargs)
        if box_dist is not None:
            self.use_anchor_box_dist(loss_dfl)
        self._dfl: list = []

    def _init_layers(self) -> None:
        super()._init_layers()
        if self.box_dist_reg_max is not None:
            self.atss_reg = self.box_dist_conv(self.num_base_priors)

    def init_weights(self) -> None:
        super().init_weights()
        if self.box_dist_reg_max is not None:
            self.start_at_anchor(self.atss_reg)

    def loss_by_feat_single(self, anchors, cls_score, bbox_pred, centerness, labels,
                            label_weights, bbox_targets, avg_factor) -> tuple:
        """ATSS's, reading ``4 x (reg_max + 1)`` outputs per anchor; DFL (centerness-weighted
        as the GIoU loss) is kept for :meth:`loss_by_feat`."""
        if self.box_dist_reg_max is None:
            return super().loss_by_feat_single(anchors, cls_score, bbox_pred, centerness,
                                               labels, label_weights, bbox_targets, avg_factor)
        anchors = anchors.reshape(-1, 4)
        cls_score = cls_score.permute(0, 2, 3, 1).reshape(-1, self.cls_out_channels)
        bbox_pred = bbox_pred.permute(0, 2, 3, 1).reshape(-1, self.bbox_coder.encode_size)
        centerness = centerness.permute(0, 2, 3, 1).reshape(-1)
        bbox_targets = bbox_targets.reshape(-1, 4)
        labels = labels.reshape(-1)
        loss_cls = self.loss_cls(cls_score, labels, label_weights.reshape(-1),
                                 avg_factor=avg_factor)
        pos = ((labels >= 0) & (labels < self.num_classes)).nonzero().squeeze(1)
        if len(pos) == 0:
            self._dfl.append((bbox_pred.sum() * 0, bbox_targets.new_tensor(0.)))
            return loss_cls, bbox_pred.sum() * 0, centerness.sum() * 0, \
                bbox_targets.new_tensor(0.)
        gts, pos_anchors = bbox_targets[pos], anchors[pos]
        weight = self.centerness_target(pos_anchors, gts)
        boxes = self.bbox_coder.decode(pos_anchors, bbox_pred[pos])
        loss_bbox = self.loss_bbox(boxes, gts, weight=weight, avg_factor=1.0)
        loss_centerness = self.loss_centerness(centerness[pos], weight, avg_factor=avg_factor)
        # per side, normalised below as the GIoU loss (by the centerness sum)
        self._dfl.append((dfl_loss(self.loss_dfl, self.bbox_coder, bbox_pred[pos], pos_anchors,
                                   gts, weight=weight, avg_factor=4.0), weight.sum()))
        return loss_cls, loss_bbox, loss_centerness, weight.sum()

    def loss_by_feat(self, cls_scores, bbox_preds, centernesses, batch_gt_instances,
                     batch_img_metas, batch_gt_instances_ignore=None) -> dict:
        """ATSS's losses, plus ``loss_dfl`` with ``box_dist`` (divided, as ATSS's box loss, by
        the centerness targets' sum over the GPUs)."""
        self._dfl = []
        losses = super().loss_by_feat(cls_scores, bbox_preds, centernesses, batch_gt_instances,
                                      batch_img_metas, batch_gt_instances_ignore)
        if self.box_dist_reg_max is not None:
            # the factor ATSS divides its box loss by: the centerness targets' sum, all GPUs
            norm = reduce_mean(sum(w for _, w in self._dfl).detach()).clamp_(min=1).item()
            losses['loss_dfl'] = [d / norm for d, _ in self._dfl]
        return losses


def _atss_outputs(head: ATSSDistHead) -> dict:
    return dict({k: v for k, v in ATSS_OUTPUTS.items() if k != 'box_deltas'},
                **head.box_output(ATSS_OUTPUTS['box_deltas'].doc))


register_head_outputs('ATSSDistHead', _atss_outputs)
