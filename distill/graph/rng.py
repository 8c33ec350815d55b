"""Random draws that leave the student's alone: paired comparisons across recipes.

A run's seed must fix the student's initial weights and its data order whatever the recipe, so
that ``none`` and ``pkd`` at one seed differ only by the distillation and a per-seed difference
is a paired one (``compare.py``). mmengine seeds torch's generator before the model is built and
initialises the student (``init_weights``) only after the whole graph exists; the teacher's
construction (its random init, overwritten by its checkpoint) and the trained adapters would
otherwise consume draws from that generator first, and each recipe would start its student from
other weights. :func:`own_stream` runs them on a stream of their own and then puts the
generator back where it was.
"""

from __future__ import annotations

import contextlib
import zlib

import torch


@contextlib.contextmanager
def own_stream(tag: str):
    """Run the block on torch's CPU generator seeded from the run's seed and ``tag``, then
    restore the generator's state from before the block.

    The block's draws are reproducible (the same seed and tag give the same values) and do
    not depend on how many draws came before it; the draws after it are those there would
    have been without the block. Modules are built on the CPU, so only the CPU generator is
    forked (CUDA generators are left alone).

    Args:
        tag (str): Names the stream (e.g. ``'distill.extra_modules'``).
    """
    generator = torch.random.default_generator
    state = generator.get_state()
    generator.manual_seed((generator.initial_seed() + zlib.crc32(tag.encode())) % 2 ** 63)
    try:
        yield
    finally:
        generator.set_state(state)
