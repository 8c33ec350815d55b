"""The embedded datasets by name, and :func:`prepare_embedded` to get one from the cache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import digits_scenes, trees
from .cache import ensure_prepared
from .errors import DatasetConfigError, short


@dataclass(frozen=True)
class EmbeddedDataset:
    """What the cache needs to know about one embedded dataset."""

    name: str
    version: int
    classes: tuple[str, ...]
    build: Callable[[Path, int], dict]


EMBEDDED = {
    m.NAME: EmbeddedDataset(m.NAME, m.VERSION, m.CLASSES, m.build)
    for m in (digits_scenes, trees)
}


def embedded_info(name: str) -> EmbeddedDataset:
    """Look up an embedded dataset, with an error listing the known names.

    Raises:
        DatasetConfigError: ``name`` is not an embedded dataset.
    """
    try:
        return EMBEDDED[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name, e.g. a list
        raise DatasetConfigError(
            f'unknown embedded dataset name={short(name)}; set name to one of '
            f'{sorted(EMBEDDED)}, or use CheckedCocoDataset for your own COCO-format data '
            '(README, Datasets)') from None


def prepare_embedded(name: str, seed: int = 0, root: str | None = None) -> Path:
    """Generate (first use) or find (later) an embedded dataset; returns its directory."""
    info = embedded_info(name)
    return ensure_prepared(info.name, info.version, seed, info.build, root)
