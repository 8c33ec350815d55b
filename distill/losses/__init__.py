"""Distillation losses: pure functions plus thin registered modules (mmrazor ``MODELS``).

Each function takes already-selected student and teacher rows, a per-row ``weight`` and an
``avg_factor`` and never reads hook dictionaries; the graph (:mod:`distill.graph`) decides
which rows (the region) and the normaliser.
"""

from .kd import KDLoss, kd_loss
from .ld import LDLoss, ld_loss, ld_per_box
from .sdr import SDRLoss, sdr_loss, sdr_per_box

__all__ = ['KDLoss', 'LDLoss', 'SDRLoss', 'kd_loss', 'ld_loss', 'ld_per_box', 'sdr_loss',
           'sdr_per_box']
