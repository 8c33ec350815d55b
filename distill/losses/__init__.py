"""Distillation losses: pure functions plus thin registered modules (mmrazor ``MODELS``).

Each function takes already-selected student and teacher rows, a per-row ``weight`` and an
``avg_factor`` and never reads hook dictionaries; the graph (:mod:`distill.graph`) decides
which rows (the region) and the normaliser.
"""

from .bckd import (
    BCKDClsLoss,
    BCKDLocLoss,
    bckd_cls_loss,
    bckd_cls_per_row,
    bckd_loc_loss,
    bckd_loc_per_box,
)
from .cwd import CWDFeatureLoss, cwd_level, cwd_loss
from .fgd import ContextBlock, FGDFeatureLoss, fgd_attention, fgd_level, fgd_loss
from .iou_kd import IoUKDLoss, iou_kd_loss, iou_kd_per_box
from .kd import KDLoss, kd_loss
from .ld import LDLoss, ld_loss, ld_per_box
from .mgd import MGDFeatureLoss, draw_masks, generation_block, mgd_loss
from .pkd import PKDFeatureLoss, channel_standardise, pkd_loss
from .qfl_kd import QFLKDLoss, qfl_kd_loss, qfl_kd_per_row
from .sdr import SDRLoss, sdr_loss, sdr_per_box

__all__ = ['BCKDClsLoss', 'BCKDLocLoss', 'CWDFeatureLoss', 'ContextBlock', 'FGDFeatureLoss',
           'IoUKDLoss', 'KDLoss', 'LDLoss', 'MGDFeatureLoss', 'PKDFeatureLoss', 'QFLKDLoss',
           'SDRLoss', 'bckd_cls_loss', 'bckd_cls_per_row', 'bckd_loc_loss', 'bckd_loc_per_box',
           'channel_standardise', 'cwd_level', 'cwd_loss', 'draw_masks', 'fgd_attention',
           'fgd_level', 'fgd_loss', 'generation_block', 'iou_kd_loss', 'iou_kd_per_box', 'kd_loss',
           'ld_loss', 'ld_per_box', 'mgd_loss', 'pkd_loss', 'qfl_kd_loss', 'qfl_kd_per_row',
           'sdr_loss', 'sdr_per_box']
