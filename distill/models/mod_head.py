"""MOD (Hao et al., "Rethinking the task-driven feature misaligned problem in one-stage object
detection", Pattern Recognition Letters 2022) on mmdet's FCOS head.

One head covers the paper's Table 2:

- ``rfa``: the Receptive Field Adaptor (Sec. 3.1): a deformable conv (modulated DCNv2 by
  default) replaces the **first** conv of each tower (``'first'``, the paper, Fig. 2); the
  published code puts it on the **last** conv (``'last'``); None: plain convs.
- ``train_cfg.assigner``: ``dict(type='APSAssigner')`` for the Aligned Points Sampler (Sec.
  3.2, :class:`~distill.models.assigners.APSAssigner`); none: FCOS's own assignment
  (scale ranges, centre sampling).
- ``quality``: the paper replaces FCOS's centerness target by the GIoU of the predicted box
  with its GT (Sec. 4.1; Table 2's "FCOS" row; ``'giou'``, clamped at 0 since the branch is a
  sigmoid); ``'centerness'`` is FCOS's (Table 2's "FCOS*").
- ``box_dist``: GFL's general distribution instead of the 4 distances, so LD applies.

The box output is always the distances ``(l, t, r, b)`` in strides (FCOS's ``norm_on_bbox``),
in training and in eval: the graph reads the same quantity from a teacher (eval) and from the
student (train).
"""

from __future__ import annotations

import torch
from mmcv.cnn import ConvModule
from mmdet.models.dense_heads import FCOSHead
from mmdet.models.dense_heads.anchor_free_head import AnchorFreeHead
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures.bbox import bbox_overlaps
from mmdet.utils import reduce_mean
from torch import Tensor, nn

from distill.graph.outputs import HeadOutput, positives_of_labels, register_head_outputs
from distill.models.box_dist import BoxDistOption, StrideDistanceCoder, dfl_loss, init_distribution
from distill.ops.deform_conv import zero_offsets  # (importing registers PSDCN, PSDCNv2)
from distill.regions.base import flatten_levels, pad_per_image

RFA_POSITIONS = (None, 'first', 'last')
QUALITIES = ('giou', 'centerness')


def centerness_target(points: Tensor, gts: Tensor) -> Tensor:
    """FCOS's centerness ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``.

    Args:
        points (Tensor[P, 2]), gts (Tensor[P, 4]).

    Returns:
        Tensor[P].
    """
    lr = torch.stack([points[:, 0] - gts[:, 0], gts[:, 2] - points[:, 0]], -1)
    tb = torch.stack([points[:, 1] - gts[:, 1], gts[:, 3] - points[:, 1]], -1)
    ratio = (lr.amin(-1) / lr.amax(-1)) * (tb.amin(-1) / tb.amax(-1))
    return ratio.clamp(min=0).sqrt()


@MODELS.register_module()
class MODHead(BoxDistOption, FCOSHead):
    """FCOS head with MOD's RFA and APS options (see the module docstring).

    Args:
        rfa (str, optional): ``'first'`` (paper), ``'last'`` (published code) or None.
        rfa_conv (str): Conv type of the RFA: ``'PSDCNv2'`` (modulated DCNv2 on
            ``distill._C``, default), ``'PSDCN'``, or mmcv's ``'DCNv2'`` / ``'DCN'`` (the same
            layers and parameters; mmcv's is 11-30x slower on CPU).
        quality (str): ``'giou'`` (paper) or ``'centerness'`` (FCOS).
        box_dist (int, optional): None: 4 distances; ``reg_max``: GFL's distribution.
        box_dist_init (float, optional): With ``box_dist``, each side's distribution starts as
            the maximum-entropy distribution with this expected distance, in strides (default
            1; ``init_distribution``); None: uniform logits (GFL's init, an expected
            ``reg_max / 2``). APS scores locations by the predicted boxes' loss, so
            very large initial boxes would send every early positive to the finest level.
        loss_dfl (dict): DFL of the distribution (GFL: 0.25); used with ``box_dist``.
        **kwargs: ``FCOSHead``'s arguments (``norm_on_bbox`` must stay True).
    """

    def __init__(self, *args, rfa: str | None = 'first', rfa_conv: str = 'PSDCNv2',
                 quality: str = 'giou', box_dist: int | None = None,
                 box_dist_init: float | None = 1.0,
                 loss_dfl: dict = dict(type='DistributionFocalLoss', loss_weight=0.25),
                 **kwargs):
        if rfa not in RFA_POSITIONS:
            raise ValueError(f'MODHead rfa must be one of {RFA_POSITIONS}, got {rfa!r}')
        if quality not in QUALITIES:
            raise ValueError(f'MODHead quality must be one of {QUALITIES}, got {quality!r}')
        if not kwargs.get('norm_on_bbox', True):
            raise ValueError('MODHead predicts distances in strides: norm_on_bbox=False (exp '
                             'of pixel distances) is not supported')
        kwargs['norm_on_bbox'] = True
        self.rfa, self.rfa_conv, self.quality = rfa, rfa_conv, quality
        self.box_dist_init = box_dist_init
        self.box_dist_reg_max = box_dist  # read by _init_predictor
        super().__init__(*args, **kwargs)
        self.bbox_coder = StrideDistanceCoder(box_dist)
        self.loss_dfl = MODELS.build(loss_dfl) if box_dist is not None else None
        assigner = (self.train_cfg or {}).get('assigner')
        #: None: FCOS's assignment; else the APS assigner
        self.assigner = TASK_UTILS.build(assigner) if assigner else None

    # ------------------------------------------------------------------------ layers
    def _tower(self) -> nn.ModuleList:
        where = {'first': 0, 'last': self.stacked_convs - 1}.get(self.rfa)
        return nn.ModuleList(
            ConvModule(self.in_channels if i == 0 else self.feat_channels, self.feat_channels,
                       3, padding=1, norm_cfg=self.norm_cfg, bias=self.conv_bias,
                       conv_cfg=dict(type=self.rfa_conv) if i == where else self.conv_cfg)
            for i in range(self.stacked_convs))

    def _init_cls_convs(self) -> None:
        self.cls_convs = self._tower()

    def _init_reg_convs(self) -> None:
        self.reg_convs = self._tower()

    def _init_predictor(self) -> None:
        super()._init_predictor()
        if self.box_dist_reg_max is not None:
            self.conv_reg = self.box_dist_conv()

    def init_weights(self) -> None:
        super().init_weights()
        zero_offsets(self)
        if self.box_dist_reg_max is not None and self.box_dist_init is not None:
            init_distribution(self.conv_reg.bias, self.box_dist_reg_max, self.box_dist_init)

    def forward_single(self, x: Tensor, scale, stride: int) -> tuple[Tensor, Tensor, Tensor]:
        """One level.

        Returns:
            tuple: ``cls_score (Tensor[B, C, H, W])``, ``box (Tensor[B, K, H, W])`` (distances
            in strides, K = 4, or distribution logits) and ``quality (Tensor[B, 1, H, W])``
            (GIoU or centerness logits).
        """
        cls_score, bbox_pred, cls_feat, reg_feat = AnchorFreeHead.forward_single(self, x)
        quality = self.conv_centerness(reg_feat if self.centerness_on_reg else cls_feat)
        bbox_pred = scale(bbox_pred).float()
        if self.box_dist_reg_max is None:
            bbox_pred = bbox_pred.clamp(min=0)
        return cls_score, bbox_pred, quality

    # ------------------------------------------------------------------------ targets
    def _points(self, maps, with_stride=True) -> list[Tensor]:
        return self.prior_generator.grid_priors([m.shape[-2:] for m in maps],
                                                dtype=maps[0].dtype, device=maps[0].device,
                                                with_stride=with_stride)

    def get_targets(self, points: list[Tensor], cls_scores: list[Tensor],
                    bbox_preds: list[Tensor], batch_gt_instances) -> tuple:
        """Labels and GT boxes of every location, by APS or by FCOS's ranges.

        Args:
            points (list[Tensor[N_l, 4]]): ``(x, y, stride, stride)`` per level.
            cls_scores, bbox_preds (list[Tensor[B, K, H, W]]): The head's outputs.
            batch_gt_instances (list[InstanceData]): GTs.

        Returns:
            tuple: ``labels (list[Tensor[B, N_l]])`` (``num_classes``: background) and
            ``gt_boxes (list[Tensor[B, N_l, 4]])`` (valid on positives).
        """
        b = len(batch_gt_instances)
        sizes = [len(p) for p in points]
        flat = torch.cat(points)
        if self.assigner is None:
            labels, ltrb = FCOSHead.get_targets(self, [p[:, :2] for p in points],
                                                batch_gt_instances)
            labels = torch.cat([lab.view(b, -1) for lab in labels], 1)
            ltrb = torch.cat([t.view(b, -1, 4) for t in ltrb], 1) * flat[:, 2:3]
            xy = flat[None, :, :2]
            boxes = torch.cat([xy - ltrb[..., :2], xy + ltrb[..., 2:]], -1)
        else:
            logits = flatten_levels(cls_scores)
            pred = self.bbox_coder.decode(flat[None].expand(b, -1, -1),
                                          flatten_levels(bbox_preds).detach())
            gts, valid = pad_per_image([t.bboxes for t in batch_gt_instances], flat)
            gt_labels, _ = pad_per_image([t.labels for t in batch_gt_instances], flat)
            g = gts.shape[1]
            index, _ = self.assigner.assign_batch(flat[:, :2], sizes, logits, pred, gts,
                                                  gt_labels, valid)
            safe = index.clamp(min=0)
            labels = torch.where(index >= 0, gt_labels.gather(1, safe), self.num_classes)
            boxes = gts.gather(1, safe[..., None].expand(-1, -1, 4)) if g else \
                flat.new_zeros(b, len(flat), 4)
        return list(labels.split(sizes, 1)), list(boxes.split(sizes, 1))

    # ------------------------------------------------------------------------ losses
    def loss_by_feat(self, cls_scores, bbox_preds, qualities, batch_gt_instances,
                     batch_img_metas, batch_gt_instances_ignore=None) -> dict:
        """Focal loss, GIoU loss, the quality branch's BCE (and DFL), over the positives."""
        points = self._points(cls_scores)
        labels, gt_boxes = self.get_targets(points, cls_scores, bbox_preds, batch_gt_instances)
        b = len(batch_gt_instances)
        cls = flatten_levels(cls_scores).reshape(-1, self.cls_out_channels)
        pred = flatten_levels(bbox_preds).reshape(-1, self.bbox_coder.encode_size)
        quality = flatten_levels(qualities).reshape(-1)
        labels = torch.cat(labels, 1).reshape(-1)
        gt_boxes = torch.cat(gt_boxes, 1).reshape(-1, 4)
        priors = torch.cat(points)[None].expand(b, -1, -1).reshape(-1, 4)
        pos = ((labels >= 0) & (labels < self.num_classes)).nonzero().squeeze(1)
        num_pos = max(reduce_mean(cls.new_tensor(float(len(pos)))).item(), 1.0)
        losses = dict(loss_cls=self.loss_cls(cls, labels, avg_factor=num_pos))
        name = 'loss_centerness' if self.quality == 'centerness' else 'loss_iou'
        if len(pos) == 0:
            losses.update(loss_bbox=pred.sum() * 0, **{name: quality.sum() * 0})
            if self.loss_dfl is not None:
                losses['loss_dfl'] = pred.sum() * 0
            return losses
        boxes = self.bbox_coder.decode(priors[pos], pred[pos])
        gts = gt_boxes[pos]
        if self.quality == 'centerness':
            # FCOS: the box loss weighted by the centerness target
            target = centerness_target(priors[pos, :2], gts)
            weight = target
            box_avg = max(reduce_mean(target.sum().detach()).item(), 1e-6)
        else:
            target = bbox_overlaps(boxes.detach(), gts, mode='giou', is_aligned=True).clamp(0)
            weight, box_avg = None, num_pos
        losses['loss_bbox'] = self.loss_bbox(boxes, gts, weight=weight, avg_factor=box_avg)
        losses[name] = self.loss_centerness(quality[pos], target, avg_factor=num_pos)
        if self.loss_dfl is not None:
            losses['loss_dfl'] = dfl_loss(self.loss_dfl, self.bbox_coder, pred[pos],
                                          priors[pos], gts, avg_factor=4.0 * num_pos)
        return losses

    # ------------------------------------------------------------------------ inference
    def _predict_by_feat_single(self, cls_score_list, bbox_pred_list, score_factor_list,
                                mlvl_priors, *args, **kwargs):
        """mmdet's, with each level's points given their stride (the coder needs it)."""
        mlvl_priors = [torch.cat([p[:, :2], p.new_full((len(p), 2), float(s[0]))], 1)
                       for p, s in zip(mlvl_priors, self.prior_generator.strides)]
        return super()._predict_by_feat_single(cls_score_list, bbox_pred_list,
                                               score_factor_list, mlvl_priors, *args, **kwargs)


def _mod_boxes(head, pred, priors, strides):
    points = torch.cat([(priors[:, :2] + priors[:, 2:]) / 2, strides[:, None].expand(-1, 2)], 1)
    return head.bbox_coder.decode(points.to(pred).expand(len(pred), -1, -1), pred)


def _mod_outputs(head: MODHead) -> dict:
    return {
        'cls_logits': HeadOutput('head', 0, 'class logits'),
        **head.box_output('distances (l, t, r, b) in strides'),
        'quality': HeadOutput('head', 2, f'{head.quality} logits'),
        'boxes': HeadOutput('head', 1, 'decoded boxes', _mod_boxes),
        'labels': HeadOutput('assign', 0, 'assigned labels (FCOS ranges or APS)'),
        'pos_mask': HeadOutput('assign', 0, 'assigned positives', positives_of_labels),
        'gt_boxes': HeadOutput('assign', 1, 'assigned GT boxes'),
    }


register_head_outputs('MODHead', _mod_outputs)
