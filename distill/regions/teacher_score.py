"""Every prior, weighted by the teacher's confidence (CrossKD's box-branch region)."""

from __future__ import annotations

from torch import Tensor

from distill.regions.base import RegionContext


class TeacherScoreRegion:
    """Each prior weighted by the teacher's detached max class probability (sigmoid).

    CrossKD (Wang et al., CVPR 2024) distils the box branch over the whole image with
    ``S(r) = max_c p_T(r, c)``: the teacher's confident locations count, its background
    barely does, and no label assignment is involved.

    Args:
        assigned_only (bool): Also zero the priors the student's label assignment ignores
            (label weight 0, :class:`AssignedRegion`), as the published CrossKD RetinaNet code
            (``reg_weights[label_weights == 0] = 0``). Default False, the paper's.
    """

    def __init__(self, assigned_only: bool = False):
        self.assigned_only = bool(assigned_only)
        #: Refused where the teacher has no dense head, or the student's declares no label
        #: weights (``distill.graph.output_check``).
        self.needs = ('teacher_cls', 'label_weights') if assigned_only else ('teacher_cls',)

    def __call__(self, ctx: RegionContext) -> Tensor:
        """Tensor[B, N] weights."""
        score = ctx.require('teacher_cls', 'TeacherScoreRegion').sigmoid().max(dim=-1).values
        if self.assigned_only:
            score = score * (ctx.student_output('label_weights', 'TeacherScoreRegion') > 0)
        return score

    def __repr__(self) -> str:
        return ('TeacherScoreRegion(assigned_only=True)' if self.assigned_only
                else 'TeacherScoreRegion()')


def _register():
    from mmrazor.registry import TASK_UTILS
    TASK_UTILS.register_module(module=TeacherScoreRegion)


_register()
