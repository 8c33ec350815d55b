"""Loading ``distill._C``, the compiled ops (``ops/csrc``), without ever failing an import."""

from __future__ import annotations

import contextlib
import os
from types import ModuleType

_enabled = {'value': True}


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


def compiled_enabled() -> bool:
    """False inside :func:`use_compiled(False) <use_compiled>`."""
    return _enabled['value']


@contextlib.contextmanager
def use_compiled(enabled: bool):
    """Context manager: ``use_compiled(False)`` runs every op's pure-PyTorch reference inside
    (benchmarks and tests compare the two in one process)."""
    previous = _enabled['value']
    _enabled['value'] = enabled
    try:
        yield
    finally:
        _enabled['value'] = previous
