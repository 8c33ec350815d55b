"""SALT-Net's head (Yang et al., "Rethinking the Misalignment Problem in Dense Object
Detection", ECML-PKDD 2022): two regression stages joined by task-aware point-set features.

Per FPN level (paper Fig. 3):

1. Towers: ``F^r = reg_convs(x)``; ``F^c = cls_convs(x) + x`` (the long-range skip connection
   of the classification tower, Table 1).
2. Stage 1, Dirac delta decoder (Eq. 1): ``C = ReLU(Scale(conv_c(F^r)))``, the coarse box as
   distances ``(l, t, r, b)`` in strides, and ``S = sigmoid(conv_s(F^r))``, ``2N - 4`` scale
   factors.
3. Regression points ``dP^r`` (Eq. 2-3), classification points ``dP^c = exp(D) * dP^r``
   with ``D = ReLU(conv_d(F^c))`` (Eq. 4-5; Eq. 6 with ``cls_points='add'``; ``d_relu=False``:
   the published code's ``D = conv_d(F^c)``, no ReLU).
4. Feature alignment (Eq. 7-8): each tower's features sampled bilinearly at its points and
   summed with learned per-point weights (:func:`distill.ops.point_sample_sum`), GN, ReLU.
5. Stage 2: GFL's general-distribution decoder (``4 x (reg_max + 1)`` logits) on the aligned
   regression features; class logits on the aligned classification features, multiplied by
   GFLv2's quality branch (top-4 probabilities of each side's distribution and their mean ->
   1x1 conv -> ReLU -> 1x1 conv -> sigmoid).

Losses (Eq. 10): QFL on the joint score, GIoU on the stage-2 boxes, DFL, GIoU on the
stage-1 boxes; ATSS assignment (mmdet's ``GFLHead`` machinery). SDR (Eq. 9) is not here: it is
an edge of the distillation graph (``configs/recipes/sdr.py``).

The forward returns ``(cls_logits, box_dist, stage1_ltrb)`` per level. ``cls_logits`` are the
logits of the joint score ``p = sigmoid(cls) * quality``, so QFL, mmdet's GFL post-processing
and KD see ``sigmoid(cls_logits) = p`` exactly (GFLv2 feeds ``p`` to a QFL on probabilities).
"""

from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from mmcv.cnn import Scale, build_norm_layer
from mmdet.models.dense_heads import GFLHead
from mmdet.models.detectors import SingleStageDetector
from mmdet.models.utils import multi_apply
from mmdet.registry import MODELS
from mmdet.utils import reduce_mean
from torch import Tensor, nn

from distill.models.salt_points import CLS_POINTS, classification_points, regression_points
from distill.ops import point_sample_sum


class PointSetAlign(nn.Module):
    """Feature alignment (Eq. 7-8): ``ReLU(GN(sum_i W_i F(p + dp_i)))``.

    Args:
        in_channels (int): Channels of the sampled features.
        out_channels (int): Output channels.
        num_points (int): N.
        norm_cfg (dict): Normalisation after the weighted sum (the head's, GN by default).
    """

    def __init__(self, in_channels: int, out_channels: int, num_points: int, norm_cfg: dict):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, num_points))
        # std 0.01 as every other conv of the head (GFLHead's init_cfg, which only sees Conv2d)
        nn.init.normal_(self.weight, std=0.01)
        self.norm = build_norm_layer(norm_cfg, out_channels)[1]

    def forward(self, feats: Tensor, points: Tensor) -> Tensor:
        """feats (Tensor[B, C, H, W]), points (Tensor[B, 2N, H, W]) -> Tensor[B, C_out, H, W]."""
        return F.relu(self.norm(point_sample_sum(feats, points, self.weight)))


def joint_logits(cls: Tensor, quality_logit: Tensor) -> Tensor:
    """``logit(sigmoid(cls) * sigmoid(quality_logit))``, computed in log space.

    Args:
        cls (Tensor[B, K, H, W]): Class logits.
        quality_logit (Tensor[B, 1, H, W]): Quality logit.

    Returns:
        Tensor[B, K, H, W]: Logits whose sigmoid is the joint score.
    """
    log_p = F.logsigmoid(cls) + F.logsigmoid(quality_logit)
    # p < 1 always; the clamp keeps log(1 - p) finite where both sigmoids round to 1
    log_p = log_p.clamp(max=-1e-6)
    return log_p - torch.log1p(-log_p.exp())


@MODELS.register_module()
class SALTHead(GFLHead):
    """SALT-Net's head (see the module docstring); GFLHead's arguments plus:

    Args:
        num_points (int): N, points per task (paper: 9 = 4 extreme + 5 interior).
        cls_points (str): ``'exp'`` (Eq. 5, paper) or ``'add'`` (Eq. 6).
        skip (bool): The classification tower's long-range skip connection (Table 1).
        d_relu (bool): ``D = ReLU(conv_d(F^c))`` as Eq. 4 (default); False: the published
            code's ``exp`` of the raw conv (no ReLU).
        reg_topk (int): Quality branch: top-k probabilities of each side (GFLv2: 4).
        reg_channels (int): Quality branch hidden channels (GFLv2: 64).
        loss_bbox_stage1 (dict): Stage-1 box loss (Eq. 10: GIoU, ``lambda_1 = 1``).

    ``test_cfg.box_stage`` (1 or 2, default 2) picks the boxes of inference; both rank by the
    refined (stage-2) scores, as the paper's Table 4.
    """

    def __init__(self, *args, num_points: int = 9, cls_points: str = 'exp', skip: bool = True,
                 d_relu: bool = True, reg_topk: int = 4, reg_channels: int = 64,
                 loss_bbox_stage1: dict = dict(type='GIoULoss', loss_weight=1.0), **kwargs):
        if num_points < 4:
            raise ValueError(f'num_points={num_points}: SALT needs the 4 extreme points')
        if cls_points not in CLS_POINTS:
            raise ValueError(f'cls_points must be one of {CLS_POINTS}, got {cls_points!r}')
        self.num_points = num_points
        self.cls_points = cls_points
        self.d_relu = d_relu
        self.skip = skip
        self.reg_topk = reg_topk
        self.reg_channels = reg_channels
        super().__init__(*args, **kwargs)
        if skip and self.in_channels != self.feat_channels:
            raise ValueError(f'skip=True adds the tower input to its output: in_channels '
                             f'({self.in_channels}) must equal feat_channels '
                             f'({self.feat_channels})')
        self.loss_bbox_stage1 = MODELS.build(loss_bbox_stage1)
        box_stage = (self.test_cfg or {}).get('box_stage', 2)
        if box_stage not in (1, 2):
            raise ValueError(f'test_cfg.box_stage must be 1 or 2, got {box_stage!r}')

    def _init_layers(self) -> None:
        super()._init_layers()  # towers, gfl_cls, gfl_reg (stage 2), stage-2 scales
        n, c = self.num_points, self.feat_channels
        self.conv_c = nn.Conv2d(c, 4, 3, padding=1)  # stage 1: coarse box (Eq. 1)
        self.conv_s = nn.Conv2d(c, 2 * n - 4, 3, padding=1)  # scale factors (Eq. 1)
        self.conv_d = nn.Conv2d(c, 2 * n, 3, padding=1)  # disentanglement vectors (Eq. 4)
        self.scales_stage1 = nn.ModuleList([Scale(1.0) for _ in self.prior_generator.strides])
        self.reg_align = PointSetAlign(c, c, n, self.norm_cfg)
        self.cls_align = PointSetAlign(c, c, n, self.norm_cfg)
        stat = 4 * (self.reg_topk + 1)  # top-k and their mean, per side (GFLv2 DGQP)
        self.quality = nn.Sequential(nn.Conv2d(stat, self.reg_channels, 1), nn.ReLU(),
                                     nn.Conv2d(self.reg_channels, 1, 1))

    def forward(self, x):
        """Per level ``(cls_logits, box_dist, stage1_ltrb)``: ``Tensor[B, K, H, W]``,
        ``Tensor[B, 4 (reg_max + 1), H, W]``, ``Tensor[B, 4, H, W]`` (strides)."""
        return multi_apply(self.forward_single, x, self.scales, self.scales_stage1)

    def forward_single(self, x: Tensor, scale: Scale, scale_stage1: Scale):
        reg_feat, cls_feat = x, x
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        if self.skip:
            cls_feat = cls_feat + x
        ltrb = F.relu(scale_stage1(self.conv_c(reg_feat)))  # Eq. 1, delta = ReLU
        reg_points = regression_points(ltrb, self.conv_s(reg_feat).sigmoid())  # Eq. 1-3
        d = self.conv_d(cls_feat)
        # Eq. 4: D = ReLU(conv(F^c)), so exp(D) >= 1 (points move outward only); the published
        # code takes exp of the raw conv (d_relu=False: points may also move inward)
        d = F.relu(d) if self.d_relu else d
        # exp(D) overflows only for D > 88; points that far sample zeros anyway
        cls_points = classification_points(reg_points, d.clamp(max=30.0), self.cls_points)
        box_dist = scale(self.gfl_reg(self.reg_align(reg_feat, reg_points))).float()
        cls = self.gfl_cls(self.cls_align(cls_feat, cls_points))
        return joint_logits(cls, self.quality(self._distribution_stats(box_dist))), box_dist, \
            ltrb.float()

    def _distribution_stats(self, box_dist: Tensor) -> Tensor:
        """GFLv2's statistics: top-k probabilities of each side, and their mean."""
        b, _, h, w = box_dist.shape
        prob = box_dist.reshape(b, 4, self.reg_max + 1, h, w).softmax(dim=2)
        top = prob.topk(self.reg_topk, dim=2).values
        return torch.cat([top, top.mean(dim=2, keepdim=True)], dim=2).reshape(b, -1, h, w)

    # ------------------------------------------------------------------------- losses
    def loss_by_feat(self, cls_scores: List[Tensor], bbox_preds: List[Tensor],
                     stage1_preds: List[Tensor], batch_gt_instances, batch_img_metas,
                     batch_gt_instances_ignore=None) -> dict:
        """GFL's QFL, GIoU and DFL on stage 2 plus GIoU on stage 1 (Eq. 10, without SDR)."""
        sizes = [m.size()[-2:] for m in cls_scores]
        device = cls_scores[0].device
        anchors, valid = self.get_anchors(sizes, batch_img_metas, device=device)
        (anchors, labels, label_weights, bbox_targets, _,
         avg_factor) = self.get_targets(anchors, valid, batch_gt_instances, batch_img_metas,
                                        batch_gt_instances_ignore=batch_gt_instances_ignore)
        avg_factor = reduce_mean(torch.tensor(avg_factor, dtype=torch.float,
                                              device=device)).item()
        cls, box, dfl, weights = multi_apply(
            super().loss_by_feat_single, anchors, cls_scores, bbox_preds, labels, label_weights,
            bbox_targets, self.prior_generator.strides, avg_factor=avg_factor)
        stage1 = multi_apply(self._stage1_loss_single, anchors, cls_scores, stage1_preds,
                             labels, bbox_targets, self.prior_generator.strides)[0]
        # box losses: a mean weighted by the positives' scores, as GFLHead.loss_by_feat
        norm = reduce_mean(sum(weights)).clamp_(min=1).item()
        return dict(loss_cls=cls, loss_bbox=[v / norm for v in box],
                    loss_dfl=[v / norm for v in dfl],
                    loss_bbox_stage1=[v / norm for v in stage1])

    def _stage1_loss_single(self, anchors: Tensor, cls_score: Tensor, ltrb: Tensor,
                            labels: Tensor, bbox_targets: Tensor, stride) -> tuple:
        """GIoU of the stage-1 boxes, weighted as GFL weights its stage-2 box loss."""
        labels = labels.reshape(-1)
        pos = ((labels >= 0) & (labels < self.num_classes)).nonzero().squeeze(1)
        if len(pos) == 0:
            return (ltrb.sum() * 0,)
        ltrb = ltrb.permute(0, 2, 3, 1).reshape(-1, 4)[pos]
        score = cls_score.detach().permute(0, 2, 3, 1).reshape(-1, self.cls_out_channels)
        weight = score[pos].sigmoid().max(dim=1).values
        centres = self.anchor_center(anchors.reshape(-1, 4)[pos]) / stride[0]
        boxes = self.bbox_coder.decode(centres, ltrb)  # as GFL decodes its stage-2 distances
        target = bbox_targets.reshape(-1, 4)[pos] / stride[0]
        return (self.loss_bbox_stage1(boxes, target, weight=weight, avg_factor=1.0),)

    # ---------------------------------------------------------------------- inference
    def predict_by_feat(self, cls_scores: List[Tensor], bbox_preds: List[Tensor],
                        stage1_preds: List[Tensor], batch_img_metas: Optional[List[dict]] = None,
                        cfg=None, rescale: bool = False, with_nms: bool = True):
        """GFL's post-processing on the refined scores with the boxes of
        ``test_cfg.box_stage`` (2: the distributions' integral; 1: the coarse boxes)."""
        cfg = self.test_cfg if cfg is None else cfg
        if cfg.get('box_stage', 2) == 2:
            return super().predict_by_feat(cls_scores, bbox_preds, None, batch_img_metas, cfg,
                                           rescale, with_nms)
        integral = self.integral
        # GFL's decoding reads distances through self.integral; stage 1 gives them directly
        self.integral = _Distances()
        try:
            return super().predict_by_feat(cls_scores, stage1_preds, None, batch_img_metas,
                                           cfg, rescale, with_nms)
        finally:
            self.integral = integral


class _Distances(nn.Module):
    """Stands in for GFL's ``Integral`` when the distances are predicted directly."""

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(-1, 4)


@MODELS.register_module()
class SALTNet(SingleStageDetector):
    """SALT-Net: a single-stage detector (backbone, FPN) with a :class:`SALTHead`."""
