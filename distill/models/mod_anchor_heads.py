"""MOD (Hao et al., Pattern Recognition Letters 2022) on the anchor heads of mmdet's ATSS / GFL
family: RFA (Sec. 3.1) and APS (Sec. 3.2) as options of ``GFLHead`` and ``ATSSDistHead``.

The paper builds MOD on FCOS (:class:`~distill.models.MODHead`); its two parts are not tied to
FCOS: the RFA replaces a conv of each tower by a deformable one, and APS assigns locations from
the losses the head's own predictions would have. Here:

* **RFA**: the ``rfa`` conv (``'first'``: the paper; ``'last'``: the published code) of both
  towers becomes ``rfa_conv`` (modulated DCNv2 by default), as in ``MODHead``.
* **APS**: set ``train_cfg.assigner=dict(type='APSAssigner', ...)``. mmdet's ATSS/GFL heads hand
  their assigner the anchors only; these heads also hand it the detached class logits and the
  decoded boxes of each image, and the anchors' centres as the locations. The APS loss should
  be the head's own classification loss: ``cls_loss='qfl'`` for GFL (QFL with the predicted
  box's IoU as the soft target), ``'focal'`` for ATSS.

One anchor per location (GFL's and ATSS's tiny and COCO configs): APS scores locations.
"""

from __future__ import annotations

import torch
from mmcv.cnn import ConvModule
from mmdet.models.dense_heads import GFLHead
from mmdet.models.task_modules.prior_generators import anchor_inside_flags
from mmdet.registry import MODELS
from mmengine.structures import InstanceData
from torch import Tensor

from distill.models.assigners import APSAssigner
from distill.models.atss_dist_head import ATSSDistHead
from distill.models.box_dist import init_distribution, square_anchor_scale
from distill.models.mod_head import RFA_POSITIONS
from distill.ops.deform_conv import zero_offsets


class _WithPredictions:
    """The APS assigner bound to one image's predictions, under mmdet's ``assign`` call of the
    ATSS/GFL heads (which passes the anchors only)."""

    def __init__(self, assigner: APSAssigner, scores: Tensor, bboxes: Tensor):
        self.assigner, self.scores, self.bboxes = assigner, scores, bboxes

    def assign(self, pred_instances, num_level_priors, gt_instances, gt_instances_ignore=None):
        anchors = pred_instances.priors
        centres = (anchors[:, :2] + anchors[:, 2:4]) / 2  # APS's locations
        return self.assigner.assign(
            InstanceData(priors=centres, scores=self.scores, bboxes=self.bboxes),
            num_level_priors, gt_instances)


class MODOption:
    """RFA and APS for an ATSS/GFL-family anchor head: a mixin placed before the head class.

    Args:
        rfa (str, optional): ``'first'`` (paper), ``'last'`` (published code) or None.
        rfa_conv (str): ``'PSDCNv2'`` (default), ``'PSDCN'``, or mmcv's ``'DCNv2'`` / ``'DCN'``.
    """

    def __init__(self, *args, rfa: str | None = 'first', rfa_conv: str = 'PSDCNv2', **kwargs):
        if rfa not in RFA_POSITIONS:
            raise ValueError(f'{type(self).__name__} rfa must be one of {RFA_POSITIONS}, '
                             f'got {rfa!r}')
        self.rfa, self.rfa_conv = rfa, rfa_conv
        self._aps_inputs = None
        super().__init__(*args, **kwargs)
        if self.uses_aps and self.num_base_priors != 1:
            raise ValueError(f'{type(self).__name__} with APSAssigner needs one anchor per '
                             f'location, got {self.num_base_priors}')

    # ------------------------------------------------------------------------ RFA
    def _init_layers(self) -> None:
        super()._init_layers()
        if self.rfa is None:
            return
        i = 0 if self.rfa == 'first' else self.stacked_convs - 1
        for convs in (self.cls_convs, self.reg_convs):
            convs[i] = ConvModule(self.in_channels if i == 0 else self.feat_channels,
                                  self.feat_channels, 3, stride=1, padding=1,
                                  conv_cfg=dict(type=self.rfa_conv), norm_cfg=self.norm_cfg)

    def init_weights(self) -> None:
        super().init_weights()
        zero_offsets(self)

    # ------------------------------------------------------------------------ APS
    @property
    def uses_aps(self) -> bool:
        return isinstance(getattr(self, 'assigner', None), APSAssigner)

    def aps_boxes(self, anchors: Tensor, bbox_pred: Tensor, stride: int) -> Tensor:
        """Decoded boxes ``(Tensor[N, 4])`` of one level's anchors (Tensor[N, 4]) and box
        outputs (Tensor[N, K])."""
        raise NotImplementedError

    def loss_by_feat(self, cls_scores, bbox_preds, *args, **kwargs):
        """The head's losses; with APS, its assignment reads these predictions."""
        self._aps_inputs = (cls_scores, bbox_preds) if self.uses_aps else None
        try:
            return super().loss_by_feat(cls_scores, bbox_preds, *args, **kwargs)
        finally:
            self._aps_inputs = None

    def get_targets(self, anchor_list, valid_flag_list, batch_gt_instances, batch_img_metas,
                    *args, **kwargs):
        if self._aps_inputs is not None:
            cls_scores, bbox_preds = self._aps_inputs
            metas = []
            for i, meta in enumerate(batch_img_metas):  # anchors: per image, per level
                with torch.no_grad():
                    scores = torch.cat([c[i].permute(1, 2, 0).reshape(-1, c.shape[1])
                                        for c in cls_scores])
                    boxes = torch.cat([
                        self.aps_boxes(a, b[i].permute(1, 2, 0).reshape(len(a), -1), s[0])
                        for a, b, s in zip(anchor_list[i], bbox_preds,
                                           self.prior_generator.strides)])
                metas.append(dict(meta, aps_predictions=(scores, boxes)))
            batch_img_metas = metas
        return super().get_targets(anchor_list, valid_flag_list, batch_gt_instances,
                                   batch_img_metas, *args, **kwargs)

    def _get_targets_single(self, flat_anchors, valid_flags, num_level_anchors, gt_instances,
                            img_meta, *args, **kwargs):
        if 'aps_predictions' not in img_meta:
            return super()._get_targets_single(flat_anchors, valid_flags, num_level_anchors,
                                               gt_instances, img_meta, *args, **kwargs)
        scores, boxes = img_meta['aps_predictions']
        inside = anchor_inside_flags(flat_anchors, valid_flags, img_meta['img_shape'][:2],
                                     self.train_cfg['allowed_border'])
        assigner = self.assigner
        self.assigner = _WithPredictions(assigner, scores[inside], boxes[inside])
        try:
            return super()._get_targets_single(flat_anchors, valid_flags, num_level_anchors,
                                               gt_instances, img_meta, *args, **kwargs)
        finally:
            self.assigner = assigner


@MODELS.register_module()
class MODGFLHead(MODOption, GFLHead):
    """mmdet's GFL head with MOD's RFA and (``train_cfg.assigner=APSAssigner``,
    ``cls_loss='qfl'``) APS. ``rfa=None`` and mmdet's ATSS assigner: mmdet's ``GFLHead``.

    With APS, the box distributions start at the anchor's half side (the maximum-entropy
    distribution, ``init_distribution``) instead of GFL's uniform logits: APS reads the
    predicted boxes, and 8-stride boxes at the start sent every early positive to the finest
    level (the other levels' scales got no gradient).
    """

    def init_weights(self) -> None:
        super().init_weights()
        if self.uses_aps:
            init_distribution(self.gfl_reg.bias, self.reg_max,
                              square_anchor_scale(self, 'APSAssigner') / 2)

    def aps_boxes(self, anchors: Tensor, bbox_pred: Tensor, stride: int) -> Tensor:
        # GFL's decoding: the distribution's expectation (GFL Eq. 4) in strides, from the centre
        centres = self.anchor_center(anchors)
        return self.bbox_coder.decode(centres, self.integral(bbox_pred) * stride)


@MODELS.register_module()
class MODATSSHead(MODOption, ATSSDistHead):
    """``ATSSDistHead`` (mmdet's ATSS, optionally ``box_dist``) with MOD's RFA and
    (``train_cfg.assigner=APSAssigner``) APS."""

    def aps_boxes(self, anchors: Tensor, bbox_pred: Tensor, stride: int) -> Tensor:
        return self.bbox_coder.decode(anchors, bbox_pred)
