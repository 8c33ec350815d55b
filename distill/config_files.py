"""Reading config files: one-line errors naming the file, and the dataset under its wrappers.

Used by the tools (``distill/cli``) and by the library alike (export, the hand-driven builds of
the tests and benchmarks), so it lives below both: nothing outside ``distill/cli`` imports
from ``distill/cli``.
"""

from __future__ import annotations

from mmengine.config import Config

from distill.errors import ConfigError
from distill.paths import resolve_config


def read_config(path: str, what: str = 'config file') -> Config:
    """``Config.fromfile`` with an error naming the file when it cannot be parsed.

    Args:
        path (str): The config's path, or one of the package's own (``configs/...``).
        what (str): What the file is, for the error ('recipe file', 'teacher config', ...).
            A 'config file' must hold a ``model`` dict.

    Returns:
        Config: The parsed config.

    Raises:
        ConfigError: The file is missing, cannot be parsed, or (a 'config file') has no model.
    """
    path = resolve_config(path, what)
    try:
        cfg = Config.fromfile(path)
    except Exception as e:  # noqa: BLE001 (syntax errors, missing _base_, bad imports alike)
        raise ConfigError(f'{what} {path!r} cannot be loaded ({type(e).__name__}: '
                          f'{" ".join(str(e).split())[:300]}): fix the file') from e
    if what == 'config file' and not isinstance(cfg.get('model'), dict):
        raise ConfigError(f'{what} {path!r} has no model dict: not a detector config')
    return cfg


def base_dataset_cfg(dataset_cfg):
    """The innermost dataset config under wrappers (``RepeatDataset``, ``ClassBalancedDataset``)."""
    while 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg['dataset']
    return dataset_cfg
