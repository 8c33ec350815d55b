"""Heads, detectors, coders and assigners registered in mmdet's registries on ``import distill``."""

from .assigners import APSAssigner, DDODAssigner
from .atss_dist_head import ATSSDistHead
from .box_dist import StrideDistanceCoder
from .ddod_head import DDODPaperHead
from .mmdet_heads import prob_logits  # (importing declares mmdet's heads' outputs)
from .mod_anchor_heads import MODATSSHead, MODGFLHead
from .mod_head import MODHead
from .salt_head import PointSetAlign, SALTHead, SALTNet, joint_logits
from .salt_points import classification_points, regression_points

__all__ = ['APSAssigner', 'ATSSDistHead', 'DDODAssigner', 'DDODPaperHead', 'MODATSSHead',
           'MODGFLHead', 'MODHead', 'PointSetAlign', 'SALTHead', 'SALTNet', 'StrideDistanceCoder',
           'classification_points', 'joint_logits', 'prob_logits', 'regression_points']
