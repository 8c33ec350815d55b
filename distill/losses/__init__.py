"""Distillation losses: pure functions plus thin registered modules (mmrazor ``MODELS``).

Each function takes already-selected student and teacher rows, a per-row ``weight`` and an
``avg_factor`` and never reads hook dictionaries; the graph (:mod:`distill.graph`) decides
which rows (the region) and the normaliser.
"""

from .iou_kd import IoUKDLoss, iou_kd_loss, iou_kd_per_box
from .kd import KDLoss, kd_loss
from .ld import LDLoss, ld_loss, ld_per_box
from .pkd import PKDFeatureLoss, channel_standardise, pkd_loss
from .qfl_kd import QFLKDLoss, qfl_kd_loss, qfl_kd_per_row
from .sdr import SDRLoss, sdr_loss, sdr_per_box

__all__ = ['IoUKDLoss', 'KDLoss', 'LDLoss', 'PKDFeatureLoss', 'QFLKDLoss', 'SDRLoss',
           'channel_standardise', 'iou_kd_loss', 'iou_kd_per_box', 'kd_loss', 'ld_loss',
           'ld_per_box', 'pkd_loss', 'qfl_kd_loss', 'qfl_kd_per_row', 'sdr_loss', 'sdr_per_box']
