"""Loading ``distill._C``, the compiled ops (``ops/csrc``), without ever failing an import."""

from __future__ import annotations

import os
from types import ModuleType


def load_extension() -> tuple[ModuleType | None, str | None]:
    """Import ``distill._C`` (which registers ``torch.ops.distill.*``).

    Returns:
        tuple: ``(module, None)``, or ``(None, reason)`` when it is not built, fails to load
        (e.g. built against another torch), or ``DISTILL_NO_EXT=1`` turns it off; every op
        then runs its pure-PyTorch reference.
    """
    if os.environ.get('DISTILL_NO_EXT', '0') == '1':
        return None, 'DISTILL_NO_EXT=1 turns distill._C off'
    try:
        from distill import _C
    except (ImportError, OSError) as error:
        return None, f'distill._C cannot be loaded ({type(error).__name__}: {error})'
    return _C, None
