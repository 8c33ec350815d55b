"""Self-distillation regression (SDR, SALT-Net paper Eq. 9): stage-1 boxes learn from stage 2.

The published SALT-Net code has no SDR (it trains stage 1 with GIoU to the GT only); this is
the paper's Eq. 9, implemented from the equation.
"""

from __future__ import annotations

import torch
from mmdet.structures.bbox import bbox_overlaps
from torch import Tensor, nn

from distill.losses._kl import weighted_average


def sdr_per_box(box_stage1: Tensor, box_stage2: Tensor, gt_boxes: Tensor,
                eps: float = 1e-6) -> Tensor:
    """``IoU2 * GIoU_loss(R1, R2)`` where ``IoU2 > IoU1``, else 0 (Eq. 9 without ``y``).

    Args:
        box_stage1 (Tensor[M, 4]): Stage-1 (coarse, Dirac) boxes ``R1``, ``(x1, y1, x2, y2)``.
        box_stage2 (Tensor[M, 4]): Stage-2 (refined, general-distribution) boxes ``R2``: the
            target, detached here.
        gt_boxes (Tensor[M, 4]): The GT box each row was assigned.
        eps (float): IoU stability term (mmdet's default).

    Returns:
        Tensor[M]: Per box. ``GIoU_loss = 1 - GIoU(R1, R2)``; ``IoU_k = IoU(R_k, GT)``; both
        IoUs are constants (no gradient): only ``R1`` learns, towards ``R2``.
    """
    r2 = box_stage2.detach()
    gt = gt_boxes.detach()
    iou1 = bbox_overlaps(box_stage1.detach(), gt, is_aligned=True, eps=eps)
    iou2 = bbox_overlaps(r2, gt, is_aligned=True, eps=eps)
    giou_loss = 1 - bbox_overlaps(box_stage1, r2, mode='giou', is_aligned=True, eps=eps)
    # Eq. 9: only where the refined box is better than the coarse one (IoU2 > IoU1)
    return torch.where(iou2 > iou1, iou2 * giou_loss, giou_loss.new_zeros(()))


def sdr_loss(student: Tensor, teacher: Tensor, *, gt_boxes: Tensor,
             weight: Tensor | None = None, avg_factor: float | Tensor | None = None) -> Tensor:
    """SDR: ``sum_m y_m * IoU2_m * GIoU_loss(R1_m, R2_m) [IoU2_m > IoU1_m] / avg_factor``.

    Args:
        student (Tensor[M, 4]): Stage-1 boxes ``R1`` of the student's positives.
        teacher (Tensor[M, 4]): Stage-2 boxes ``R2`` of the same priors (detached here).
        gt_boxes (Tensor[M, 4]): Their assigned GT boxes.
        weight (Tensor[M], optional): The classification score ``y`` of each row (the graph's
            ``MainRegion(weight='score')``: the student's detached max class probability).
        avg_factor (float | Tensor, optional): Normaliser: the number of positives (Eq. 10's
            ``1 / N_pos``; the graph's ``normalize='count'``).

    Returns:
        Tensor[]: Scalar loss.
    """
    return weighted_average(sdr_per_box(student, teacher, gt_boxes), weight, avg_factor)


class SDRLoss(nn.Module):
    """Registered module around :func:`sdr_loss`.

    Args:
        loss_weight (float): ``lambda_4`` of Eq. 10 (paper: 1).
    """

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, student: Tensor, teacher: Tensor, *, gt_boxes: Tensor,
                weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None) -> Tensor:
        """See :func:`sdr_loss`; the result is multiplied by ``loss_weight``."""
        return self.loss_weight * sdr_loss(student, teacher, gt_boxes=gt_boxes, weight=weight,
                                           avg_factor=avg_factor)

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}'


def _register():
    from mmrazor.registry import MODELS
    MODELS.register_module(module=SDRLoss)


_register()
