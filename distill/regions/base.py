"""What a region needs to know about one batch, and the level-flattening convention."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor


def flatten_levels(maps: list[Tensor] | tuple[Tensor, ...], num_priors: int = 1) -> Tensor:
    """Flatten per-level head maps into one row per prior, in mmdet's prior order.

    Args:
        maps (list[Tensor[B, A * K, H_l, W_l]]): One map per FPN level.
        num_priors (int): ``A``, the priors per location (``head.num_base_priors``: 9 for
            RetinaNet's anchors, 1 for most dense heads).

    Returns:
        Tensor[B, N, K]: ``N = sum_l H_l * W_l * A`` rows, level-major, then row-major over
        the locations, then the ``A`` priors of a location (row ``location * A + anchor``: the
        order of mmdet's ``grid_priors`` and label assignment targets, and of its own
        ``permute(0, 2, 3, 1).reshape(B, -1, K)``). With one prior per location it is a
        transposed view of the levels concatenated as ``[B, K, N]`` (strides ``(K N, 1, N)``):
        the edges read it at a few hundred rows (``x[keep]``), so the whole-map transpose
        that a contiguous result needs is skipped (and concatenating permuted views was
        4-6x slower, 0.29 ms per map set at K = 68, measured). With several, the channels
        ``a * K + k`` of a location must be split by prior, which needs mmdet's permute.
    """
    if num_priors == 1:
        return torch.cat([m.flatten(2) for m in maps], dim=2).transpose(1, 2)
    k = maps[0].shape[1] // num_priors
    return torch.cat([m.permute(0, 2, 3, 1).reshape(len(m), -1, k) for m in maps], dim=1)


def pad_per_image(items: list[Tensor], like: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image tensors stacked along a padded first dimension (e.g. each image's GT boxes).

    Args:
        items (list[Tensor[G_i, ...]]): One per image, the same trailing shape.
        like (Tensor): The output's device (and dtype, for floating items).

    Returns:
        tuple: ``padded (Tensor[B, G, ...])`` (padding: zeros, G the largest G_i) and
        ``valid (Tensor[B, G] bool)``.
    """
    g = max([len(t) for t in items] + [0])
    dtype = like.dtype if items and items[0].is_floating_point() else None
    ref = items[0] if items else like
    padded = torch.zeros(len(items), g, *ref.shape[1:], dtype=dtype or ref.dtype,
                         device=like.device)
    valid = torch.zeros(len(items), g, dtype=torch.bool, device=like.device)
    for i, t in enumerate(items):  # a copy per image; nothing per GT
        padded[i, :len(t)] = t
        valid[i, :len(t)] = True
    return padded, valid


@dataclass
class RegionContext:
    """The inputs of the regions for one batch.

    Attributes:
        priors (list[Tensor[N_l, 4]]): The student's prior boxes (x1, y1, x2, y2) per level;
            for anchor-free heads the preset square anchors built by the graph.
        gt_bboxes (list[Tensor[G_i, 4]]): GT boxes of each image (ignored regions excluded).
        pos_mask (Tensor[B, N] | None): The student's assigned positives (main region).
        student_cls (Tensor[B, N, C] | None): The student's class logits (detached).
        teacher_cls (Tensor[B, N, C] | None): The teacher's class logits (a run with a
            teacher).
        outputs (callable | None): ``outputs(name) -> Tensor[B, N, ...]``: any other named
            output of the student's head (e.g. ``label_weights``), read on demand.
        cache (dict): Per-batch memo, so a region used by two edges is computed once.
    """

    priors: list[Tensor]
    gt_bboxes: list[Tensor]
    pos_mask: Tensor | None = None
    student_cls: Tensor | None = None
    teacher_cls: Tensor | None = None
    outputs: Callable[[str], Tensor] | None = None
    cache: dict = field(default_factory=dict)

    @property
    def num_level_priors(self) -> list[int]:
        return [len(p) for p in self.priors]

    @property
    def flat_priors(self) -> Tensor:
        """Tensor[N, 4]: the priors of all levels."""
        if 'flat_priors' not in self.cache:
            self.cache['flat_priors'] = torch.cat(self.priors, dim=0)
        return self.cache['flat_priors']

    @property
    def batch_size(self) -> int:
        return len(self.gt_bboxes)

    def padded_gts(self) -> tuple[Tensor, Tensor]:
        """GT boxes padded to the largest count.

        Returns:
            tuple: ``boxes (Tensor[B, G, 4])`` (padding: zeros) and ``valid (Tensor[B, G])``.
        """
        if 'padded_gts' not in self.cache:
            self.cache['padded_gts'] = pad_per_image(self.gt_bboxes, self.flat_priors)
        return self.cache['padded_gts']

    def student_score(self, region: str) -> Tensor:
        """Tensor[B, N]: the student's detached max class probability (sigmoid) per prior."""
        if 'student_score' not in self.cache:
            cls = self.require('student_cls', region)
            self.cache['student_score'] = cls.detach().sigmoid().max(dim=-1).values
        return self.cache['student_score']

    def student_output(self, name: str, region: str) -> Tensor:
        """Tensor[B, N, ...]: the student head's named output ``name`` (the graph's reader
        memoises it per step)."""
        return self.require('outputs', region)(name)

    def require(self, name: str, region: str):
        value = getattr(self, name)
        if value is None:
            raise ValueError(f'region {region} needs {name!r}, which this graph does not '
                             f'record (add the student tap that provides it)')
        return value
