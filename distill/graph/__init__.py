"""The teacher-student graph: one mmrazor algorithm for baselines, KD/LD and self-distillation."""

from .algorithm import DistillGraph, NonFiniteLossError
from .outputs import HeadOutput, head_outputs, register_head_outputs
from .pair_check import PairMismatchError, check_pair
from .taps import ClonedModuleOutputsRecorder, ModuleMethodOutputsRecorder
from .teacher_cache import TeacherCache, TeacherCacheError
from .teacher_cache_hook import TeacherCacheHook

__all__ = ['ClonedModuleOutputsRecorder', 'DistillGraph', 'HeadOutput',
           'ModuleMethodOutputsRecorder', 'NonFiniteLossError', 'PairMismatchError', 'TeacherCache',
           'TeacherCacheError', 'TeacherCacheHook', 'check_pair', 'head_outputs',
           'register_head_outputs']
