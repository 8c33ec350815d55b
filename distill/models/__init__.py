"""Heads and detectors registered in mmdet's ``MODELS`` on ``import distill``."""

from .salt_head import PointSetAlign, SALTHead, SALTNet, joint_logits
from .salt_points import classification_points, regression_points

__all__ = ['PointSetAlign', 'SALTHead', 'SALTNet', 'classification_points', 'joint_logits',
           'regression_points']
