"""What reproducing a run's numbers needs besides its config and seed.

Two runs of one config and seed agree bit for bit only on the same library versions, the same
number of intra-op threads (a float sum split over 2 threads rounds differently than over 1)
and the same code: :func:`environment` records them, and ``compare.py`` stores the record in
each run's ``final_metrics.json`` (``reproduce``) so that a user rerunning a row knows what to
match (docs/reliability.md).
"""

from __future__ import annotations

import os
import os.path as osp
import platform
import subprocess


def _git_commit(root: str) -> str | None:
    """The checkout's commit (``+dirty`` with uncommitted changes), or None outside git."""
    try:
        head = subprocess.run(['git', '-C', root, 'rev-parse', 'HEAD'], capture_output=True,
                              text=True, timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(['git', '-C', root, 'status', '--porcelain', '--untracked-files=no'],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ('+dirty' if dirty else '')
    except (OSError, subprocess.SubprocessError):
        return None


def environment(threads: int | None = None) -> dict:
    """The versions, thread count and code a run used.

    Args:
        threads (int, optional): The run's intra-op thread count; default: what torch uses in
            this process (``OMP_NUM_THREADS`` or the core count), which a child process started
            with the same environment uses too.

    Returns:
        dict: ``torch_threads``, ``OMP_NUM_THREADS`` (None when unset), ``cpu_count``,
        ``machine``, ``python``, the versions of torch, mmengine, mmcv, mmdet, mmrazor and
        distill, and ``git_commit``.
    """
    import mmcv
    import mmdet
    import mmengine
    import mmrazor
    import torch

    import distill
    return dict(
        torch_threads=threads if threads is not None else torch.get_num_threads(),
        OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS'), cpu_count=os.cpu_count(),
        machine=platform.machine(), python=platform.python_version(),
        torch=torch.__version__, mmengine=mmengine.__version__, mmcv=mmcv.__version__,
        mmdet=mmdet.__version__, mmrazor=mmrazor.__version__, distill=distill.__version__,
        git_commit=_git_commit(osp.dirname(osp.dirname(osp.abspath(__file__)))))
