"""A NaN or infinite loss stops training before a broken checkpoint is written."""

from __future__ import annotations

import torch

from distill.errors import DistillError


class NonFiniteLossError(DistillError, FloatingPointError):
    """A loss became NaN or infinite; the message names the edge."""


def check_finite(losses: dict, edge_names, teacher_ckpt: str | None) -> None:
    """Raise :class:`NonFiniteLossError` if any loss of the step is NaN or infinite.

    One fused check on the common path (a single device sync); only a failing step walks the
    losses to name them.

    Args:
        losses (dict[str, Tensor | list[Tensor]]): The step's losses (keys with ``loss``).
        edge_names: The graph's edge names (a failing ``loss_<edge>`` is named as an edge).
        teacher_ckpt (str | None): Named in the message (a broken teacher is a common cause).
    """
    values = [v for k, v in losses.items() if 'loss' in k for v in
              (v if isinstance(v, (list, tuple)) else [v])]
    if values and torch.isfinite(torch.stack([v.detach().sum() for v in values])).all():
        return
    bad = {}
    for k, v in losses.items():
        total = sum(x.detach().sum() for x in (v if isinstance(v, (list, tuple)) else [v]))
        if 'loss' in k and not torch.isfinite(total):
            bad[k] = float(total)
    edges = [k[len('loss_'):] for k in bad if k[len('loss_'):] in edge_names]
    what = (f'distill edge(s) {edges}' if edges else f'student loss(es) {sorted(bad)}')
    raise NonFiniteLossError(
        f'{what} became non-finite ({bad}); training stops here so that no checkpoint '
        f'with broken weights is written (the last checkpoint in the work dir is intact). '
        f'Teacher checkpoint: {teacher_ckpt!r}.')
