"""The teacher-student graph: one mmrazor algorithm for baselines, KD/LD and self-distillation."""

from .algorithm import DistillGraph, NonFiniteLossError
from .pair_check import PairMismatchError, check_pair
from .taps import ModuleMethodOutputsRecorder

__all__ = ['DistillGraph', 'ModuleMethodOutputsRecorder', 'NonFiniteLossError',
           'PairMismatchError', 'check_pair']
