"""Edge weight schedules: an edge's loss multiplied by a factor that follows training progress.

An edge may carry ``weight_schedule``: one schedule dict or a list of them (their factors
multiply). Each names its ``type``:

- ``constant`` (the default without a schedule): 1.
- ``linear_warmup``, ``iters=k``: ``min(1, (i + 1) / k)`` at iteration ``i`` (0-based), so the
  first step already distils a little and step ``k - 1`` on at full weight.
- ``linear_decay`` / ``cosine_decay``, ``end_epoch=e`` or ``end_frac=f``: from 1 at the first
  iteration to 0 at iteration ``T = e * iters_per_epoch`` (or ``T = round(f * max_iters)``):
  ``1 - i / T``, or ``(1 + cos(pi * i / T)) / 2``; 0 from ``T`` on.
- ``off``, ``after_epoch=e`` or ``after_frac=f``: 1 during the first ``e`` epochs (or
  ``round(f * max_epochs)``), 0 afterwards: distillation switched off for the last epochs, as
  MMYOLO's RTMDet distillation does for its last 20 of 300 epochs.

Fractions are of the run's own schedule, so they follow ``--epochs``. The factor is a pure
function of mmengine's iteration and epoch counters (kept in its ``MessageHub`` by the
``RuntimeInfoHook`` every runner has), so ``--resume`` continues the same factors exactly; the
schedule is part of the recipe, which the run's config records and ``--resume`` checks. It
scales a loss only: the exported student does not depend on it.
"""

from __future__ import annotations

import math

from distill.errors import RecipeError

#: Each schedule type and its allowed keys (exactly one of each alternative is required).
SCHEDULES = {
    'constant': ((),),
    'linear_warmup': (('iters',),),
    'linear_decay': (('end_epoch', 'end_frac'),),
    'cosine_decay': (('end_epoch', 'end_frac'),),
    'off': (('after_epoch', 'after_frac'),),
}


def schedules_of(edge: dict) -> list[dict]:
    """The edge's schedules as a list (empty: constant weight)."""
    sched = edge.get('weight_schedule')
    if sched is None:
        return []
    return list(sched) if isinstance(sched, (list, tuple)) else [sched]


def check_schedule(edge: dict, where: str) -> None:
    """Raise :class:`~distill.errors.RecipeError` naming ``where`` for a malformed schedule."""
    raw = edge.get('weight_schedule')
    if raw is not None and not isinstance(raw, (dict, list, tuple)):
        raise RecipeError(f'{where}: weight_schedule={raw!r} must be a dict or a list of dicts, '
                          f'e.g. dict(type=\'off\', after_frac=0.75)')
    for sched in schedules_of(edge):
        if not isinstance(sched, dict) or sched.get('type') not in SCHEDULES:
            raise RecipeError(f'{where}: weight_schedule entry {sched!r} must be a dict with '
                              f'type one of {list(SCHEDULES)}')
        kind = sched['type']
        allowed = {k for group in SCHEDULES[kind] for k in group}
        extra = sorted(set(sched) - allowed - {'type'})
        if extra:
            raise RecipeError(f'{where}: weight_schedule {kind!r} has unknown key(s) {extra} '
                              f'(it takes {sorted(allowed) or "none"})')
        for group in SCHEDULES[kind]:
            given = [k for k in group if k in sched]
            if group and len(given) != 1:
                raise RecipeError(f'{where}: weight_schedule {kind!r} needs exactly one of '
                                  f'{list(group)}, got {given or "none"}')
        for key in allowed & set(sched):
            value = sched[key]
            frac = key.endswith('_frac')
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
                  and (0 < value <= 1 if frac else value >= 1 and float(value).is_integer()))
            if not ok:
                raise RecipeError(f'{where}: weight_schedule {kind!r} {key}={value!r} must be '
                                  + ('a fraction in (0, 1]' if frac else 'a whole number >= 1'))


def _end_iter(sched: dict, iters_per_epoch: float, max_iters: int) -> float:
    if 'end_epoch' in sched:
        return sched['end_epoch'] * iters_per_epoch
    return round(sched['end_frac'] * max_iters)


def schedule_factor(sched: dict, it: int, epoch: int, max_iters: int, max_epochs: int) -> float:
    """The factor of one schedule at iteration ``it`` of epoch ``epoch`` (both 0-based, as
    mmengine's ``runner.iter`` / ``runner.epoch`` during the iteration)."""
    kind = sched['type']
    if kind == 'constant':
        return 1.0
    if kind == 'linear_warmup':
        return min(1.0, (it + 1) / sched['iters'])
    if kind in ('linear_decay', 'cosine_decay'):
        end = _end_iter(sched, max_iters / max_epochs, max_iters)
        if end <= 0 or it >= end:
            return 0.0
        x = it / end
        return 1.0 - x if kind == 'linear_decay' else 0.5 * (1.0 + math.cos(math.pi * x))
    last = (sched['after_epoch'] if 'after_epoch' in sched
            else round(sched['after_frac'] * max_epochs))
    return 1.0 if epoch < last else 0.0


def edge_factor(schedules: list[dict], it: int, epoch: int, max_iters: int,
                max_epochs: int) -> float:
    """The product of the schedules' factors (1 without any)."""
    factor = 1.0
    for sched in schedules:
        factor *= schedule_factor(sched, it, epoch, max_iters, max_epochs)
    return factor


def training_progress() -> tuple[int, int, int, int] | None:
    """``(iter, epoch, max_iters, max_epochs)`` of the current mmengine training, from its
    ``MessageHub``; None outside a training loop (no progress recorded)."""
    from mmengine.logging import MessageHub
    hub = MessageHub.get_current_instance()
    values = [hub.get_info(k) for k in ('iter', 'epoch', 'max_iters', 'max_epochs')]
    if any(v is None for v in values) or not values[2] or not values[3]:
        return None
    return tuple(int(v) for v in values)
