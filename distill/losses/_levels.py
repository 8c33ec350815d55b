"""Argument checks shared by the feature-map losses (per-level lists of FPN maps)."""

from __future__ import annotations

from torch import Tensor


def check_levels(method: str, student: list[Tensor], teacher: list[Tensor],
                 weight: list[Tensor] | None, avg_factor) -> None:
    """Raise ``ValueError`` unless the maps pair up level by level.

    Args:
        method (str): Names the loss in messages (e.g. ``'cwd_loss'``).
        student (list[Tensor[B, C, H_l, W_l]]): Student maps per level.
        teacher (list[Tensor[B, C, H_l, W_l]]): Teacher maps per level.
        weight (list[Tensor[B, 1, H_l, W_l]] | None): A region's weight per location.
        avg_factor: Must be None: these losses normalise each level themselves.
    """
    if avg_factor is not None:
        raise ValueError(f'{method} normalises each level itself; avg_factor must be None')
    if len(student) != len(teacher):
        raise ValueError(f'{method}: {len(student)} student levels vs {len(teacher)} '
                         f'teacher levels')
    if weight is not None and len(weight) != len(student):
        raise ValueError(f'{method}: {len(weight)} weight maps for {len(student)} levels')
    for i, (s, t) in enumerate(zip(student, teacher)):
        if s.shape != t.shape:
            raise ValueError(f'{method}: level {i}: student map {tuple(s.shape)} vs teacher '
                             f'map {tuple(t.shape)}')
        if weight is not None and (weight[i].shape[0] != s.shape[0]
                                   or weight[i].shape[-2:] != s.shape[-2:]):
            raise ValueError(f'{method}: level {i}: weight {tuple(weight[i].shape)} does not '
                             f'cover the map {tuple(s.shape)}')


def check_width(method: str, student: list[Tensor], channels: int, num_levels: int) -> None:
    """Raise ``ValueError`` unless the maps are what a loss with trained parts was built for.

    Args:
        method (str): Names the loss class in messages.
        student (list[Tensor[B, C, H_l, W_l]]): Student maps (after the graph's adapter).
        channels (int): The channel count the loss's modules were built for.
        num_levels (int): The number of levels they were built for (one module per level).
    """
    widths = sorted({s.shape[1] for s in student})
    if len(student) != num_levels or widths != [channels]:
        raise ValueError(f'{method} was built for {num_levels} levels of {channels} channels '
                         f'(its trained modules are per level), but the neck gives '
                         f'{len(student)} levels of {widths} channels: set the recipe\'s '
                         f'loss channels= (the teacher\'s neck out_channels) and num_levels=')
