"""IoU-family losses between decoded boxes, the student's (or cross-head's) against the teacher's.

CrossKD's box terms (Wang et al., CVPR 2024): GIoU beside the KL on the bins for GFL and ATSS
heads, the ``-log IoU`` of mmdet's ``IoULoss`` for FCOS; the teacher's box is the target.
"""

from __future__ import annotations

from mmdet.structures.bbox import bbox_overlaps
from torch import Tensor, nn

from distill.losses._kl import weighted_average

MODES = ('giou', 'iou', 'log_iou')


def iou_kd_per_box(student: Tensor, teacher: Tensor, mode: str = 'giou',
                   eps: float = 1e-6) -> Tensor:
    """``1 - GIoU``, ``1 - IoU`` or ``-log IoU`` of each box pair.

    Args:
        student (Tensor[M, 4]): Student boxes ``(x1, y1, x2, y2)``.
        teacher (Tensor[M, 4]): Teacher boxes (detached here), same frame.
        mode (str): ``'giou'``, ``'iou'`` or ``'log_iou'`` (mmdet's ``IoULoss`` default).
        eps (float): mmdet's IoU stability term (``log_iou`` clamps the IoU at it, as mmdet).

    Returns:
        Tensor[M]: The loss of each box.
    """
    if mode not in MODES:
        raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    if student.shape != teacher.shape or student.shape[-1:] != (4,):
        raise ValueError(f'boxes must be [M, 4] on both sides, got {tuple(student.shape)} and '
                         f'{tuple(teacher.shape)}')
    overlap = bbox_overlaps(student, teacher.detach(), mode='giou' if mode == 'giou' else 'iou',
                            is_aligned=True, eps=eps)
    return -overlap.clamp(min=eps).log() if mode == 'log_iou' else 1 - overlap


def iou_kd_loss(student: Tensor, teacher: Tensor, *, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None, mode: str = 'giou') -> Tensor:
    """``sum_m weight_m * L(B_S(m), B_T(m)) / avg_factor`` (see :func:`iou_kd_per_box`)."""
    return weighted_average(iou_kd_per_box(student, teacher, mode), weight, avg_factor)


class IoUKDLoss(nn.Module):
    """Registered module around :func:`iou_kd_loss`.

    Args:
        mode (str): ``'giou'`` (default; CrossKD's GFL and ATSS), ``'iou'`` or ``'log_iou'``
            (CrossKD's FCOS, mmdet's ``IoULoss``).
        loss_weight (float): Multiplier of the loss.
    """

    def __init__(self, mode: str = 'giou', loss_weight: float = 1.0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f'IoUKDLoss mode must be one of {MODES}, got {mode!r}')
        self.mode = mode
        self.loss_weight = loss_weight

    def forward(self, student: Tensor, teacher: Tensor, *, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None) -> Tensor:
        """See :func:`iou_kd_loss`; the result is multiplied by ``loss_weight``."""
        return self.loss_weight * iou_kd_loss(student, teacher, weight=weight,
                                              avg_factor=avg_factor, mode=self.mode)

    def extra_repr(self) -> str:
        return f'mode={self.mode!r}, loss_weight={self.loss_weight}'


def _register():
    from mmrazor.registry import MODELS
    MODELS.register_module(module=IoUKDLoss)


_register()
