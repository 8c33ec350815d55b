"""The embedded datasets by name, and :func:`prepare_embedded` to get one from the cache."""

from __future__ import annotations

import json
import shutil
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
            '(docs/datasets.md)') from None


def prepare_embedded(name: str, seed: int = 0, root: str | None = None) -> Path:
    """Generate (first use) or find (later) an embedded dataset; returns its directory."""
    info = embedded_info(name)
    return ensure_prepared(info.name, info.version, seed, info.build, root)


def write_coco_folder(root: str | Path, classes: tuple[str, ...], num_images: int = 3) -> Path:
    """The first ``num_images`` val images of digits-scenes as an mmdet COCO folder.

    Writes ``train2017/``, ``val2017/`` and ``annotations/instances_{train,val}2017.json``
    under ``root`` (the same images in both), with the categories named ``classes`` (ids
    1..n, as COCO): what mmdet's COCO configs read with ``data_root=root``. For tests and
    benchmarks of the COCO configs, which cannot download COCO here.

    Returns:
        Path: ``root``.
    """
    src, root = prepare_embedded('digits-scenes'), Path(root)
    val = json.loads((src / 'annotations' / 'instances_val.json').read_text())
    images = val['images'][:num_images]
    ids = {im['id'] for im in images}
    coco = dict(images=images, annotations=[a for a in val['annotations'] if a['image_id'] in ids],
                categories=[dict(id=i + 1, name=n) for i, n in enumerate(classes)])
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    for split in ('train2017', 'val2017'):
        (root / split).mkdir(exist_ok=True)
        for im in images:
            shutil.copy(src / 'val' / im['file_name'], root / split / im['file_name'])
        (root / 'annotations' / f'instances_{split}.json').write_text(json.dumps(coco))
    return root
