"""Taps: mmrazor recorders. mmrazor's own cover module outputs; this adds submodule methods."""

from __future__ import annotations

import functools
from typing import Any

from mmrazor.models.task_modules.recorder import ModuleOutputsRecorder
from mmrazor.models.task_modules.recorder.base_recorder import BaseRecorder
from mmrazor.registry import TASK_UTILS
from torch import nn


@TASK_UTILS.register_module()
class ModuleMethodOutputsRecorder(BaseRecorder):
    """Records what a method of one submodule returns, e.g. ``'bbox_head.get_targets'``.

    mmrazor's ``MethodOutputsRecorder`` patches a method on its *class* ('mmdet.models.
    GFLHead.get_targets'), so it would also record a teacher or any other instance of the
    class, and it re-imports the class at every step. This recorder wraps the method of the
    one instance found at ``source`` (submodule path, then the method name).

    Args:
        source (str): ``'<submodule path>.<method>'`` relative to the model.
    """

    def __init__(self, source: str):
        super().__init__(source)
        self._recording = False

    def prepare_from_model(self, model: nn.Module | None = None) -> None:
        path, _, method = self.source.rpartition('.')
        try:
            module = model.get_submodule(path) if path else model
        except AttributeError as err:
            raise ValueError(f'tap source {self.source!r}: no submodule {path!r} in '
                             f'{type(model).__name__}') from err
        original = getattr(module, method, None)
        if not callable(original):
            raise ValueError(f'tap source {self.source!r}: {type(module).__name__} has no '
                             f'method {method!r}')

        @functools.wraps(original)
        def recorded(*args: Any, **kwargs: Any):
            outputs = original(*args, **kwargs)
            if self._recording:
                self.data_buffer.append(outputs)
            return outputs

        setattr(module, method, recorded)  # instance attribute: only this module is tapped

    def __enter__(self):
        super().__enter__()
        self._recording = True

    def __exit__(self, exc_type, exc_value, traceback):
        super().__exit__(exc_type, exc_value, traceback)
        self._recording = False


@TASK_UTILS.register_module()
class ClonedModuleOutputsRecorder(ModuleOutputsRecorder):
    """mmrazor's ``ModuleOutputs`` recorder keeping a copy of each output.

    A ``ConvModule``'s norm output is its pre-activation feature, but the in-place ReLU that
    follows overwrites that very tensor: a recorded reference would hold the activated one.
    The copy (``clone``, differentiable) keeps the pre-activation values and their gradient
    path (CrossKD's cross-head input).
    """

    def forward_hook(self, module: nn.Module, inputs, outputs) -> None:
        if self._recording:
            self.data_buffer.append(outputs.clone())
