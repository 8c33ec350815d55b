"""The main region (the student's positives), inside-GT-box, everything, and the assigned."""

from __future__ import annotations

from torch import Tensor

from distill.regions.base import RegionContext


class MainRegion:
    """The student's positives from its own label assignment ("Main" in the LD paper).

    Args:
        weight (str): ``'score'``: each positive weighted by the student's detached max
            class probability (sigmoid), as GFL weights its box losses, so LD "follows the
            bbox regression" (paper Sec. 3.4); ``'ones'``: plain mask.
    """

    #: What it reads from the :class:`RegionContext` (the graph refuses it on a detector
    #: without a dense head: ``distill.graph.nodes``).
    needs = ('pos_mask', 'student_cls')

    def __init__(self, weight: str = 'score'):
        if weight not in ('score', 'ones'):
            raise ValueError(f"MainRegion weight must be 'score' or 'ones', got {weight!r}")
        self.weight = weight

    def __call__(self, ctx: RegionContext) -> Tensor:
        """Tensor[B, N] weights."""
        pos = ctx.require('pos_mask', 'MainRegion').float()
        if self.weight == 'ones':
            return pos
        return pos * ctx.student_score('MainRegion')

    def __repr__(self) -> str:
        return f'MainRegion(weight={self.weight!r})'


class GTBoxRegion:
    """Priors whose centre lies inside any GT box (weight 1)."""

    #: Only the priors' centres: a head-less student's map cells serve.
    needs = ('locations',)

    def __call__(self, ctx: RegionContext) -> Tensor:
        """Tensor[B, N] weights."""
        priors = ctx.flat_priors
        cx = (priors[:, 0] + priors[:, 2]) / 2
        cy = (priors[:, 1] + priors[:, 3]) / 2
        gts, valid = ctx.padded_gts()  # [B, G, 4]
        inside = ((cx[None, :, None] > gts[:, None, :, 0])
                  & (cx[None, :, None] < gts[:, None, :, 2])
                  & (cy[None, :, None] > gts[:, None, :, 1])
                  & (cy[None, :, None] < gts[:, None, :, 3]) & valid[:, None, :])
        return inside.any(-1).to(priors.dtype)

    def __repr__(self) -> str:
        return 'GTBoxRegion()'


class AllRegion:
    """Every prior of every image (weight 1)."""

    #: Only the number of priors: a head-less student's map cells serve.
    needs = ('locations',)

    def __call__(self, ctx: RegionContext) -> Tensor:
        """Tensor[B, N] weights."""
        priors = ctx.flat_priors
        return priors.new_ones(ctx.batch_size, len(priors))

    def __repr__(self) -> str:
        return 'AllRegion()'


class AssignedRegion:
    """Every prior the student's label assignment does not ignore (its label weight > 0).

    mmdet's ``MaxIoUAssigner`` (RetinaNet) ignores the anchors whose best IoU lies between
    ``neg_iou_thr`` and ``pos_iou_thr``: they get label weight 0. The published CrossKD
    RetinaNet code weights its distillation losses by these label weights; the paper distils
    every location (``AllRegion``). Needs a head that declares ``label_weights``.
    """

    needs = ('label_weights',)

    def __call__(self, ctx: RegionContext) -> Tensor:
        """Tensor[B, N] weights (1 or 0)."""
        return (ctx.student_output('label_weights', 'AssignedRegion') > 0).float()

    def __repr__(self) -> str:
        return 'AssignedRegion()'


def _register():
    from mmrazor.registry import TASK_UTILS
    for cls in (MainRegion, GTBoxRegion, AllRegion, AssignedRegion):
        TASK_UTILS.register_module(module=cls)


_register()
