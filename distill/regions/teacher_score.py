"""Every prior, weighted by the teacher's confidence (CrossKD's box-branch region)."""

from __future__ import annotations

from torch import Tensor

from distill.regions.base import RegionContext


class TeacherScoreRegion:
    """Each prior weighted by the teacher's detached max class probability (sigmoid).

    CrossKD (Wang et al., CVPR 2024) distils the box branch over the whole image with
    ``S(r) = max_c p_T(r, c)``: the teacher's confident locations count, its background
    barely does, and no label assignment is involved.
    """

    def __call__(self, ctx: RegionContext) -> Tensor:
        """Tensor[B, N] weights."""
        return ctx.require('teacher_cls', 'TeacherScoreRegion').sigmoid().max(dim=-1).values

    def __repr__(self) -> str:
        return 'TeacherScoreRegion()'


def _register():
    from mmrazor.registry import TASK_UTILS
    TASK_UTILS.register_module(module=TeacherScoreRegion)


_register()
