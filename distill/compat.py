"""The one place that makes the OpenMMLab 2.x stack work on torch 2.13.

Imported once, first, by :mod:`distill`. Every fix here is small, idempotent and covered by
``tests/test_compat.py``, which shows both that it is needed and that it works.

Fixes:
    1. **mmrazor 1.0 quantization stand-in.** ``import mmrazor.models`` imports
       ``mmrazor.structures.quantization``, which calls torch private APIs removed in torch 2.x.
       Distillation never uses quantization, so a stand-in module with the names other mmrazor
       modules import is registered in ``sys.modules`` before mmrazor is imported.
    2. **Checkpoint loading with ``weights_only=True``.** torch >= 2.6 loads with
       ``weights_only=True`` by default and mmengine 0.10.7 relies on the default, so every Runner
       checkpoint (its ``meta`` holds mmengine ``HistoryBuffer`` objects and numpy arrays/scalars)
       fails to load. We allowlist exactly those types with
       ``torch.serialization.add_safe_globals`` and keep ``weights_only`` on: a checkpoint is a
       pickle, and an untrusted one must not run code.
       ``HistoryBuffer.__getstate__`` also pickled its statistics *functions* (``min``, ``max``,
       ...), which would need ``builtins.getattr`` allowlisted, a gate to any attribute of any
       allowed object. The buffer now saves the methods' names; the methods themselves live in a
       class-level registry that is rebuilt at import, so nothing is lost on resume.
    3. **Atomic local writes.** mmengine's ``LocalBackend.put``/``put_text`` open the destination
       with ``'wb'`` and write in place, so a run killed while saving leaves a truncated checkpoint
       (or ``last_checkpoint`` pointer) behind. They now write a temporary file in the same
       directory, fsync it and ``os.replace`` it over the destination.
    4. **Distributed launch on CPU.** mmengine's ``_init_dist_pytorch`` always calls
       ``torch.cuda.set_device``, which a CPU build of torch does not have, so
       ``tools/dist_train.sh`` could not start on a CPU machine. Without CUDA the process group is
       now initialised directly (``nccl`` requested on a CPU-only machine becomes ``gloo``, with a
       warning); and ``MMDistributedDataParallel`` drops the ``device_ids=[LOCAL_RANK]`` the
       Runner passes, which torch rejects for a module on the CPU.
    5. **Python's recursion limit.** Importing mmrazor's graph tracer (pulled in by its model
       registry) raises ``sys.setrecursionlimit`` to 2**20 for the whole process, for its own
       fx tracing, which distillation does not use. With that limit, deep recursion overflows the
       C stack instead of raising ``RecursionError``: a JSON file of 100,000 ``[`` given as an
       annotation file crashed the process with a segmentation fault. The limit is put back to
       what it was once the package's registries are imported.
"""

from __future__ import annotations

import os
import sys
import tempfile
import types
import warnings

_APPLIED = False


# ---------------------------------------------------------------------------------------------
# 1. mmrazor quantization stand-in
# ---------------------------------------------------------------------------------------------
QUANT_MODULE = 'mmrazor.structures.quantization'
# The names that the rest of mmrazor imports from the quantization package.
QUANT_NAMES = ('BackendConfigs', 'QConfigHandler', 'QSchemeHandler', 'SupportQtypes')


class _QuantizationUnavailable:
    """Placeholder for mmrazor's quantization classes (unusable on torch 2.x)."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError(
            'mmrazor quantization is not available: mmrazor 1.0.0 quantization calls torch '
            'private APIs that torch 2.13 no longer has; distill replaces it with a stand-in '
            '(distill/compat.py). Distillation does not need it.')


def install_mmrazor_quantization_standin() -> bool:
    """Register the quantization stand-in unless the real module is already imported.

    Returns:
        bool: True if the stand-in was installed by this call.
    """
    if QUANT_MODULE in sys.modules:
        return False
    module = types.ModuleType(QUANT_MODULE)
    module.__path__ = []  # a package, so ``from .quantization import *`` works
    module.__doc__ = 'distill.compat stand-in: mmrazor quantization is unusable on torch 2.x.'
    module.__all__ = list(QUANT_NAMES)
    for name in QUANT_NAMES:
        setattr(module, name, type(name, (_QuantizationUnavailable, ), {}))
    # BackendConfigs is used as a dict at import time by some mmrazor modules.
    module.BackendConfigs = {}
    sys.modules[QUANT_MODULE] = module
    return True


# ---------------------------------------------------------------------------------------------
# 2. weights_only checkpoint loading: allowlist the exact types mmengine stores
# ---------------------------------------------------------------------------------------------
def checkpoint_safe_globals() -> list:
    """The types a mmengine Runner checkpoint holds beyond tensors and builtin containers.

    Found with ``torch.serialization.get_unsafe_globals_in_checkpoint`` on Runner checkpoints
    (see ``tests/test_compat.py``): ``meta.message_hub`` stores ``HistoryBuffer`` objects whose
    state is numpy arrays, and runtime info holds numpy scalars.
    """
    import numpy as np
    from mmengine.logging import HistoryBuffer

    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    dtypes = [type(np.dtype(t)) for t in (
        np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
        np.uint64, np.float16, np.float32, np.float64)]
    return [HistoryBuffer, multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype,
            *dtypes]


def allow_checkpoint_types() -> None:
    """Allowlist :func:`checkpoint_safe_globals` for ``torch.load(weights_only=True)``."""
    import torch
    torch.serialization.add_safe_globals(checkpoint_safe_globals())


def patch_history_buffer_state() -> None:
    """Pickle ``HistoryBuffer`` statistics methods by name, not as functions (idempotent)."""
    from mmengine.logging import HistoryBuffer

    if getattr(HistoryBuffer.__getstate__, '_distill', False):
        return
    original_getstate, original_setstate = HistoryBuffer.__getstate__, HistoryBuffer.__setstate__

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k != 'statistics_methods'}
        state['statistics_method_names'] = sorted(self._statistics_methods)
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        names = state.pop('statistics_method_names', [])
        original_setstate(self, state)  # also accepts older states holding the functions
        missing = [n for n in names if n not in self._statistics_methods]
        if missing:
            warnings.warn(f'HistoryBuffer statistics methods {missing} were saved in the '
                          'checkpoint but are not registered in this process; register them '
                          'with HistoryBuffer.register_statistics before resuming')

    __getstate__._distill = True
    __getstate__.original, __setstate__.original = original_getstate, original_setstate
    HistoryBuffer.__getstate__ = __getstate__
    HistoryBuffer.__setstate__ = __setstate__


# ---------------------------------------------------------------------------------------------
# 3. atomic writes through mmengine's local file backend
# ---------------------------------------------------------------------------------------------
def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, then restore it at once
    os.umask(mask)
    return mask


def atomic_write(data: bytes | str, filepath: str | os.PathLike, encoding: str = 'utf-8') -> None:
    """Write ``data`` to ``filepath`` so that readers see the old or the new file, never half.

    The file gets the mode an ordinary ``open(path, 'w')`` would give it: the mode of the file
    it replaces, or ``0o666`` less the umask for a new file. (``tempfile.mkstemp`` creates its
    file with mode 0600, which would leave checkpoints, exported weights and metrics unreadable
    to another account or a serving process.)

    Args:
        data (bytes | str): The content; ``str`` is encoded with ``encoding``.
        filepath (str | PathLike): The destination; its directory is created if missing.
        encoding (str): Used when ``data`` is a ``str``.
    """
    filepath = os.fspath(filepath)
    directory = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode(encoding)
    try:
        mode = os.stat(filepath).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~current_umask()
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(filepath) + '.',
                               suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def patch_local_backend_atomic() -> None:
    """Make ``mmengine.fileio.LocalBackend.put``/``put_text`` atomic (idempotent)."""
    from mmengine.fileio.backends.local_backend import LocalBackend

    if getattr(LocalBackend.put, '_distill_atomic', False):
        return

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(obj, filepath)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write(obj, filepath, encoding=encoding)

    put._distill_atomic = put_text._distill_atomic = True
    put.original, put_text.original = LocalBackend.put, LocalBackend.put_text  # for the tests
    put.__doc__ = LocalBackend.put.__doc__
    put_text.__doc__ = LocalBackend.put_text.__doc__
    LocalBackend.put = put
    LocalBackend.put_text = put_text


def patch_cpu_distributed_init() -> None:
    """Let mmengine's pytorch launcher start on machines without CUDA (idempotent)."""
    from mmengine.dist import utils as dist_utils

    if getattr(dist_utils._init_dist_pytorch, '_distill', False):
        return
    original = dist_utils._init_dist_pytorch

    def _init_dist_pytorch(backend, init_backend='torch', **kwargs) -> None:
        import torch
        import torch.distributed as torch_dist
        if torch.cuda.is_available() or init_backend != 'torch':
            return original(backend, init_backend=init_backend, **kwargs)
        if backend == 'nccl':
            warnings.warn("dist backend 'nccl' needs CUDA; none is available, using 'gloo'")
            backend = 'gloo'
        torch_dist.init_process_group(backend=backend, **kwargs)

    _init_dist_pytorch._distill = True
    _init_dist_pytorch.original = original
    dist_utils._init_dist_pytorch = _init_dist_pytorch

    from mmengine.model.wrappers.distributed import MMDistributedDataParallel
    original_init = MMDistributedDataParallel.__init__

    def __init__(self, module, detect_anomalous_params: bool = False, **kwargs) -> None:
        params = list(module.parameters())
        if params and all(p.device.type == 'cpu' for p in params):
            kwargs.pop('device_ids', None)  # torch: device_ids only for GPU modules
            kwargs.pop('output_device', None)
        original_init(self, module, detect_anomalous_params=detect_anomalous_params, **kwargs)

    __init__.original = original_init
    MMDistributedDataParallel.__init__ = __init__


def restore_recursion_limit(limit: int) -> None:
    """Put the recursion limit back (fix 5), if an import raised it."""
    if sys.getrecursionlimit() > limit:
        sys.setrecursionlimit(limit)


def apply() -> None:
    """Apply every fix once. Safe to call repeatedly."""
    global _APPLIED
    if _APPLIED:
        return
    install_mmrazor_quantization_standin()
    allow_checkpoint_types()
    patch_history_buffer_state()
    patch_local_backend_atomic()
    patch_cpu_distributed_init()
    _APPLIED = True
