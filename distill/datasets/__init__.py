"""Datasets: validated COCO-format loading and the embedded real-pixel datasets."""

from .coco import CheckedCocoDataset, DatasetConfigError, EmbeddedCocoDataset, EmbeddedCocoMetric
from .registry import EMBEDDED, embedded_info, prepare_embedded

__all__ = ['CheckedCocoDataset', 'DatasetConfigError', 'EmbeddedCocoDataset',
           'EmbeddedCocoMetric', 'EMBEDDED', 'embedded_info', 'prepare_embedded']
