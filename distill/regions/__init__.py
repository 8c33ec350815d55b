"""Distillation regions: weight masks over the student's flattened anchors.

A region maps a :class:`RegionContext` (the student's priors, the GT boxes, the student's
label assignment and class logits of one batch) to a ``Tensor[B, N]`` of non-negative
weights; zero means "not in the region". Regions are registered in mmrazor's ``TASK_UTILS``
and can be built in plain Python.
"""

from .base import RegionContext, flatten_levels
from .fgd import FGDRegion, fgd_foreground
from .score_gap import ScoreGapRegion
from .simple import AllRegion, AssignedRegion, GTBoxRegion, MainRegion
from .teacher_score import TeacherScoreRegion
from .vlr import VLRRegion, atss_thresholds, iou_and_diou, vlr_mask

__all__ = ['AllRegion', 'AssignedRegion', 'FGDRegion', 'GTBoxRegion', 'MainRegion',
           'RegionContext', 'ScoreGapRegion', 'TeacherScoreRegion', 'VLRRegion',
           'atss_thresholds', 'fgd_foreground', 'flatten_levels', 'iou_and_diou', 'vlr_mask']
