"""Label assigners (and their building blocks)."""

from .aps_scores import aps_scores
from .batched_gmm import gmm_split

__all__ = ['aps_scores', 'gmm_split']
