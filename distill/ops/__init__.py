"""Feature-sampling ops. Each has a pure-PyTorch reference; a compiled version (``distill._C``)
replaces it behind the same interface where built."""

from .deform_conv import PSDCN, PSDCNv2
from .point_sample import (
    point_sample,
    point_sample_reference,
    point_sample_sum,
    points_from_deform_offsets,
)

__all__ = ['PSDCN', 'PSDCNv2', 'point_sample', 'point_sample_reference', 'point_sample_sum',
           'points_from_deform_offsets']
