"""Feature-sampling ops. Each has a pure-PyTorch reference; a compiled version (``distill._C``)
replaces it behind the same interface where built."""

from .point_sample import point_sample, point_sample_reference, point_sample_sum

__all__ = ['point_sample', 'point_sample_reference', 'point_sample_sum']
