"""DDOD's head as its paper says (Chen et al., "Disentangle Your Dense Object Detector",
ACM MM 2021), on mmdet 3.3's ``DDODHead``.

Kept from mmdet: the towers with a deformable first conv in both (Sec. 4.2), the IoU branch
(Sec. 5.1), the separate classification and regression assigners (Sec. 4.1; here
:class:`~distill.models.assigners.DDODAssigner`, ``alpha`` 0.8 and 0.5).

Fixed (Sec. 4.3, Eq. 3-5): the FPN level weights come from two counters, the positives of
the classification assignment per level and those of the regression assignment, accumulated
over training. mmdet adds both steps' positives to the classification counter and weights
the regression losses with it; the published code keeps the counts in Python lists, lost at
every resume and different on every GPU. Here they are float64 buffers, ``cls_level_pos`` and
``reg_level_pos``: saved in checkpoints (a resumed run continues with the same weights) and
summed over the ranks at every step (every GPU applies the same weights).

Option ``box_dist`` (LD for DDOD): the regression branch predicts GFL's general distribution
(:class:`~distill.models.box_dist.StrideDistanceCoder`) with DFL, so LD applies.
"""

from __future__ import annotations

import torch
from mmcv.cnn import ConvModule
from mmdet.models.dense_heads import DDODHead
from mmdet.models.utils import multi_apply
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_overlaps
from mmdet.utils import reduce_mean
from mmengine.dist import all_reduce, get_world_size
from torch import Tensor

from distill.graph.outputs import ATSS_OUTPUTS, HeadOutput, register_head_outputs
from distill.models.box_dist import BoxDistOption, dfl_loss
from distill.ops import deform_conv  # noqa: F401 (registers PSDCN, PSDCNv2)

#: mmdet's guard when every level has the same count (Eq. 3 is 0/0 there): the weight is 2.
EPS = 1e-10


def level_weights(counts: Tensor) -> Tensor:
    """Eq. 3-4: ``w_i = 2 - (n_i - min N) / (max N - min N)``, in [1, 2].

    Args:
        counts (Tensor[L]): Accumulated positives per level.

    Returns:
        Tensor[L]: 1 for the level with the most positives, 2 for the one with the fewest.
    """
    lo, hi = counts.min(), counts.max()
    return 2 - (counts - lo) / (hi - lo + EPS)


def count_positives(labels: list[Tensor], num_classes: int) -> Tensor:
    """Tensor[L] (float64): positives per level of per-level labels ``Tensor[B, N_l]``."""
    return torch.stack([((lab >= 0) & (lab < num_classes)).sum() for lab in labels]).double()


@MODELS.register_module()
class DDODPaperHead(BoxDistOption, DDODHead):
    """mmdet's ``DDODHead`` with the paper's level counters and a general-distribution option.

    Args:
        box_dist (int, optional): None: box deltas (the paper); ``reg_max`` (e.g. 16): GFL's
            general distribution, so LD can distil this head. Needs square anchors, one per
            location (``ratios=[1.0]``, ``scales_per_octave=1``).
        loss_dfl (dict): DFL of the distribution (GFL: weight 0.25); used with ``box_dist``.
        sync_level_counts (bool): Sum each step's per-level positives over the ranks before
            accumulating (default True; False: each GPU counts its own images, as the
            published code).
        dcn_type (str): The first convs' deformable conv: ``'PSDCN'`` (default, on
            ``distill._C``: the same layer as mmcv's, 11-30x faster on CPU) or ``'DCN'``
            (mmcv's); the parameters are the same, so checkpoints load into either.
        **kwargs: ``DDODHead``'s arguments; ``train_cfg`` needs ``assigner`` (classification)
            and ``reg_assigner``.
    """

    def __init__(self, *args, box_dist: int | None = None,
                 loss_dfl: dict = dict(type='DistributionFocalLoss', loss_weight=0.25),
                 sync_level_counts: bool = True, dcn_type: str = 'PSDCN', **kwargs):
        self.dcn_type = dcn_type  # read by _init_layers, which super().__init__ calls
        self.box_dist_reg_max = box_dist
        self.sync_level_counts = sync_level_counts
        super().__init__(*args, **kwargs)
        if box_dist is not None:
            self.use_anchor_box_dist(loss_dfl)

    def _init_layers(self) -> None:
        super()._init_layers()
        if self.use_dcn and self.dcn_type != 'DCN':
            for tower in (self.cls_convs, self.reg_convs):
                tower[0] = ConvModule(self.in_channels, self.feat_channels, 3, padding=1,
                                      conv_cfg=dict(type=self.dcn_type), norm_cfg=self.norm_cfg)
        if self.box_dist_reg_max is not None:
            self.atss_reg = self.box_dist_conv(self.num_base_priors)
        # the paper's two counters replace mmdet's Python lists (see the module docstring)
        del self.cls_num_pos_samples_per_level, self.reg_num_pos_samples_per_level
        levels = self.prior_generator.num_levels
        self.register_buffer('cls_level_pos', torch.zeros(levels, dtype=torch.float64))
        self.register_buffer('reg_level_pos', torch.zeros(levels, dtype=torch.float64))

    def init_weights(self) -> None:
        super().init_weights()
        if self.box_dist_reg_max is not None:
            self.start_at_anchor(self.atss_reg)

    @property
    def box_size(self) -> int:
        """Regression outputs per prior (4, or ``4 * (reg_max + 1)``)."""
        return self.bbox_coder.encode_size if self.box_dist_reg_max is not None else 4

    def accumulate(self, counter: Tensor, labels: list[Tensor]) -> Tensor:
        """Add this step's positives per level (all ranks) to ``counter``; its weights."""
        counts = count_positives(labels, self.num_classes).to(counter.device)
        if self.sync_level_counts and get_world_size() > 1:
            all_reduce(counts)  # a sum: every rank ends with the same counter
        counter += counts
        return level_weights(counter)

    def process_predictions_and_anchors(self, anchor_list, valid_flag_list, cls_scores,
                                        bbox_preds, batch_img_metas,
                                        batch_gt_instances_ignore=None) -> tuple:
        """mmdet's, with ``box_size`` outputs per prior: each image's anchors, flags, class
        logits ``Tensor[N, C]`` and box outputs ``Tensor[N, box_size]``, levels concatenated."""
        num_imgs = len(batch_img_metas)
        num_level = [len(a) for a in anchor_list[0]]
        flat = [torch.cat([m.permute(0, 2, 3, 1).reshape(num_imgs, -1, k) for m in maps], 1)
                for maps, k in ((cls_scores, self.num_base_priors * self.cls_out_channels),
                                (bbox_preds, self.num_base_priors * self.box_size))]
        if batch_gt_instances_ignore is None:
            batch_gt_instances_ignore = [None] * num_imgs
        return ([torch.cat(a) for a in anchor_list], [torch.cat(v) for v in valid_flag_list],
                [num_level] * num_imgs, list(flat[0]), list(flat[1]),
                batch_gt_instances_ignore)

    def get_targets(self, anchor_list, valid_flag_list, num_level_anchors_list, cls_score_list,
                    bbox_pred_list, batch_gt_instances, batch_img_metas,
                    batch_gt_instances_ignore=None) -> tuple:
        """Both assignments (one method, so the graph's assignment tap records them).

        Returns:
            tuple: mmdet's ``get_cls_targets`` output (anchors, labels, label weights, box
            targets, box weights, avg factor; per level ``Tensor[B, N_l, ...]``) followed by
            ``get_reg_targets``'s.
        """
        args = (anchor_list, valid_flag_list, num_level_anchors_list, cls_score_list,
                bbox_pred_list, batch_gt_instances, batch_img_metas, batch_gt_instances_ignore)
        return tuple(self.get_cls_targets(*args)) + tuple(self.get_reg_targets(*args))

    def loss_by_feat(self, cls_scores, bbox_preds, iou_preds, batch_gt_instances,
                     batch_img_metas, batch_gt_instances_ignore=None) -> dict:
        """Eq. 5: ``w_cls * L_cls + w_reg * L_reg`` per level, each weight from its own
        counter (Eq. 3-4)."""
        sizes = [m.shape[-2:] for m in cls_scores]
        device = cls_scores[0].device
        anchors, flags = self.get_anchors(sizes, batch_img_metas, device=device)
        common = self.process_predictions_and_anchors(anchors, flags, cls_scores, bbox_preds,
                                                      batch_img_metas, batch_gt_instances_ignore)
        targets = self.get_targets(*common[:5], batch_gt_instances, batch_img_metas,
                                   common[5])
        (_, labels, label_weights, _, _, cls_avg,
         reg_anchors, reg_labels, reg_label_weights, reg_targets, reg_box_weights,
         reg_avg) = targets

        def normaliser(n):
            return max(reduce_mean(torch.tensor(float(n), device=device)).item(), 1.0)

        with torch.no_grad():
            w_cls = self.accumulate(self.cls_level_pos, labels).tolist()
            w_reg = self.accumulate(self.reg_level_pos, reg_labels).tolist()
        loss_cls, = multi_apply(self.loss_cls_by_feat_single, cls_scores, labels,
                                label_weights, w_cls, avg_factor=normaliser(cls_avg))
        reg = multi_apply(self.loss_reg_by_feat_single, reg_anchors, bbox_preds, iou_preds,
                          reg_labels, reg_label_weights, reg_targets, reg_box_weights, w_reg,
                          avg_factor=normaliser(reg_avg))
        losses = dict(loss_cls=loss_cls, loss_bbox=reg[0], loss_iou=reg[1])
        if self.box_dist_reg_max is not None:
            losses['loss_dfl'] = reg[2]
        return losses

    def loss_reg_by_feat_single(self, anchors, bbox_pred, iou_pred, labels, label_weights,
                                bbox_targets, bbox_weights, reweight_factor, avg_factor):
        """mmdet's with ``box_size`` outputs per prior; plus DFL with ``box_dist``.

        Returns:
            tuple: ``w * loss_bbox``, ``w * loss_iou`` (and ``w * loss_dfl``).
        """
        if self.box_dist_reg_max is None:
            return super().loss_reg_by_feat_single(anchors, bbox_pred, iou_pred, labels,
                                                   label_weights, bbox_targets, bbox_weights,
                                                   reweight_factor, avg_factor)
        anchors = anchors.reshape(-1, 4)
        bbox_pred = bbox_pred.permute(0, 2, 3, 1).reshape(-1, self.box_size)
        iou_pred = iou_pred.permute(0, 2, 3, 1).reshape(-1)
        bbox_targets = bbox_targets.reshape(-1, 4)
        labels = labels.reshape(-1)
        pos = ((labels >= 0) & (labels < self.num_classes)).nonzero().squeeze(1)
        iou_targets = iou_pred.new_zeros(labels.shape)
        iou_weights = iou_pred.new_zeros(labels.shape)
        iou_weights[pos] = 1.0
        if len(pos) == 0:
            zero = bbox_pred.sum() * 0
            return zero, iou_pred.sum() * 0, zero
        boxes = self.bbox_coder.decode(anchors[pos], bbox_pred[pos])
        gts = bbox_targets[pos]  # boxes: the coder's targets are not encoded
        loss_bbox = self.loss_bbox(boxes, gts, avg_factor=avg_factor)
        iou_targets[pos] = bbox_overlaps(boxes.detach(), gts, is_aligned=True)
        loss_iou = self.loss_iou(iou_pred, iou_targets, iou_weights, avg_factor=avg_factor)
        loss_dfl = dfl_loss(self.loss_dfl, self.bbox_coder, bbox_pred[pos], anchors[pos], gts,
                            avg_factor=4.0 * avg_factor)
        return (reweight_factor * loss_bbox, reweight_factor * loss_iou,
                reweight_factor * loss_dfl)


def _ddod_outputs(head: DDODPaperHead) -> dict:
    """Named outputs: ``get_targets`` records the classification assignment at 0-5 (labels,
    positives and GT boxes are that one's) and the regression assignment at 6-11."""
    return dict(
        {k: v for k, v in ATSS_OUTPUTS.items() if k not in ('box_deltas', 'centerness')},
        **head.box_output(ATSS_OUTPUTS['box_deltas'].doc),
        iou=HeadOutput('head', 2, 'IoU-prediction logits'))


register_head_outputs('DDODPaperHead', _ddod_outputs)
