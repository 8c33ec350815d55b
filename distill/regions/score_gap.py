"""Every prior, weighted by the largest teacher-student score gap (BCKD's localisation weight)."""

from __future__ import annotations

from torch import Tensor

from distill.regions.base import RegionContext


class ScoreGapRegion:
    """Each prior weighted by ``max_j |sigma(l_t,ij) - sigma(l_s,ij)|``, detached.

    BCKD (Yang et al., ICCV 2023) weights its IoU-based localisation distillation of prior
    ``i`` by the largest of its classification gaps ``w_ij = |p'_t,ij - p'_s,ij|`` over the
    classes ``j`` (module :mod:`distill.losses.bckd`, B3): the priors where the student's
    sigmoid scores still differ from the teacher's count most. Every prior of every image is
    in it (a prior where the two agree exactly weighs 0). Like every region it is detached:
    no gradient reaches the student's class logits through it (the published code detaches
    it too).
    """

    #: What it reads from the :class:`RegionContext`: both heads' class scores.
    needs = ('student_cls', 'teacher_cls')

    def __call__(self, ctx: RegionContext) -> Tensor:
        """Tensor[B, N] weights in [0, 1]."""
        t = ctx.require('teacher_cls', 'ScoreGapRegion').detach().sigmoid()
        s = ctx.require('student_cls', 'ScoreGapRegion').detach().sigmoid()
        if s.shape != t.shape:
            raise ValueError(f'ScoreGapRegion: student class logits {tuple(s.shape)} and '
                             f'teacher class logits {tuple(t.shape)} differ in shape')
        return (t - s).abs().max(dim=-1).values

    def __repr__(self) -> str:
        return 'ScoreGapRegion()'


def _register():
    from mmrazor.registry import TASK_UTILS
    TASK_UTILS.register_module(module=ScoreGapRegion)


_register()
