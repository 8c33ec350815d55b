"""``--busy``: keep one core loaded while a benchmark times, as training rarely leaves the cores
idle (dataloader workers, a second run, DDP ranks on the same machine).

A separate process spins on one core for the whole ``with`` block; it is stopped on exit.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp


def _spin() -> None:
    x = 0
    while True:  # pure Python: one core, no memory traffic to speak of
        x = (x + 1) % 1000003


@contextlib.contextmanager
def busy_core(enabled: bool = True):
    """Run the block with one core kept busy by another process (nothing when disabled)."""
    if not enabled:
        yield
        return
    proc = mp.get_context('spawn').Process(target=_spin, daemon=True)
    proc.start()
    try:
        yield
    finally:
        proc.terminate()
        proc.join()
