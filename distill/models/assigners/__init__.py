"""Label assigners (and their building blocks)."""

from .aps_assigner import APSAssigner
from .aps_scores import aps_scores
from .batched_gmm import gmm_split, gmm_split_batched
from .ddod_assigner import DDODAssigner

__all__ = ['APSAssigner', 'DDODAssigner', 'aps_scores', 'gmm_split',
           'gmm_split_batched']
