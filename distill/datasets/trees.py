"""``trees``: DeepForest's human-annotated NEON aerial images, tiled, split by scene.

Source: the four RGB aerial images (10 cm/px) with hand-drawn tree-crown boxes in Pascal VOC XML
that ship in the ``deepforest`` 2.1.0 wheel (MIT; the images are NEON data). The package is only
*read* from disk, never imported: it pulls heavy dependencies (and torchvision, which has no CPU
build here). Install it with ``pip install --no-deps deepforest==2.1.0`` (``make`` does).

Tiling: the fewest full ``TILE`` px tiles that cover each scene, evenly spaced (neighbours
overlap by a few pixels where the scene size is not a multiple of the tile). A crown cut by a
tile border keeps its clipped box when at least ``MIN_VISIBLE`` of its area lies inside the
tile; a smaller sliver becomes an ``iscrowd`` ignore region, so the detector is neither trained
on it as background nor penalised for finding it.

Split by scene, never by tile: tiles of one scene overlap and show the same trees, so a
tile-level split would leak. All crowns are one class, ``tree`` (SOAP's Alive/Dead merged).
"""

from __future__ import annotations

import importlib.util
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .cache import coco_skeleton, dump_json

NAME = 'trees'
VERSION = 1
CLASSES = ('tree', )
TILE = 256
MIN_VISIBLE = 0.5
SCENES = dict(
    train=('2019_YELL_2_528000_4978000_image_crop2', 'OSBS_029'),
    val=('2019_YELL_2_541000_4977000_image_crop', 'SOAP_061'),
)
INSTALL_HINT = 'pip install --no-deps deepforest==2.1.0'


def deepforest_data_dir() -> Path:
    """The ``deepforest/data`` directory of the installed wheel, found without importing it."""
    spec = importlib.util.find_spec('deepforest')
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the 'trees' dataset reads the aerial images shipped in the deepforest wheel, "
            f'which is not installed; install it with `{INSTALL_HINT}` (no dependencies needed)')
    data = Path(list(spec.submodule_search_locations)[0]) / 'data'
    missing = [s for split in SCENES.values() for s in split
               if not (data / f'{s}.png').is_file() or not (data / f'{s}.xml').is_file()]
    if missing:
        raise FileNotFoundError(f'{data}: scene files missing for {missing}; reinstall with '
                                f'`{INSTALL_HINT}`')
    return data


def read_voc(xml_path: Path) -> np.ndarray:
    """Boxes ``float64[N, 4]`` (x1, y1, x2, y2) of a Pascal VOC annotation file."""
    root = ET.parse(xml_path).getroot()
    boxes = []
    for obj in root.iter('object'):
        bb = obj.find('bndbox')
        boxes.append([float(bb.find(k).text) for k in ('xmin', 'ymin', 'xmax', 'ymax')])
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def tile_origins(length: int, tile: int = TILE) -> list[int]:
    """Start offsets of the fewest full tiles covering ``[0, length)``, evenly spaced.

    ``ceil(length / tile)`` tiles from 0 to ``length - tile``; the unavoidable overlap is shared
    equally between neighbours instead of piling up at the last tile.
    """
    if length <= tile:
        return [0]
    n = math.ceil(length / tile)
    return [int(math.floor(i * (length - tile) / (n - 1) + 0.5)) for i in range(n)]


def clip_to_tile(boxes: np.ndarray, x0: int, y0: int, tile: int = TILE):
    """Clip boxes to a tile.

    Args:
        boxes (np.ndarray): ``float64[N, 4]`` scene boxes (x1, y1, x2, y2).
        x0, y0 (int): Tile origin in the scene.
        tile (int): Tile size.

    Returns:
        tuple: ``clipped (float64[M, 4])`` in tile coordinates and ``visible (float64[M])``, the
        fraction of each box's area inside the tile, for the M boxes that intersect it.
    """
    local = boxes - np.array([x0, y0, x0, y0], dtype=np.float64)
    clipped = np.clip(local, 0, tile)
    area = (local[:, 2] - local[:, 0]) * (local[:, 3] - local[:, 1])
    inter = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1]) & (area > 0)
    return clipped[keep], inter[keep] / area[keep]


def build(out_dir: Path, seed: int) -> dict:
    """Tile the scenes into ``out_dir`` (see :mod:`distill.datasets.cache` for the layout).

    ``seed`` is accepted for a uniform interface; tiling is deterministic.
    """
    data = deepforest_data_dir()
    summary = {}
    for split, scenes in SCENES.items():
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        coco = coco_skeleton(CLASSES)
        jobs = [(s, x0, y0) for s in scenes for (x0, y0) in _grid(data / f'{s}.png')]
        images = {s: np.asarray(Image.open(data / f'{s}.png').convert('RGB')) for s in scenes}
        boxes = {s: read_voc(data / f'{s}.xml') for s in scenes}
        for scene, x0, y0 in tqdm(jobs, desc=f'{NAME} {split}', unit='tile', mininterval=1.0):
            image_id = len(coco['images']) + 1
            file_name = f'{scene}_{x0:04d}_{y0:04d}.png'
            Image.fromarray(images[scene][y0:y0 + TILE, x0:x0 + TILE]).save(
                out_dir / split / file_name)
            coco['images'].append(dict(id=image_id, file_name=file_name, width=TILE,
                                       height=TILE, scene=scene, tile_origin=[x0, y0]))
            clipped, visible = clip_to_tile(boxes[scene], x0, y0)
            for (x1, y1, x2, y2), frac in zip(clipped.tolist(), visible.tolist()):
                w, h = x2 - x1, y2 - y1
                coco['annotations'].append(dict(
                    id=len(coco['annotations']) + 1, image_id=image_id, category_id=1,
                    bbox=[x1, y1, w, h], area=w * h, iscrowd=int(frac < MIN_VISIBLE)))
        dump_json(coco, out_dir / 'annotations' / f'instances_{split}.json')
        summary[split] = dict(images=len(coco['images']),
                              boxes=sum(1 - a['iscrowd'] for a in coco['annotations']),
                              ignore_regions=sum(a['iscrowd'] for a in coco['annotations']))
    return summary


def _grid(png: Path) -> list[tuple[int, int]]:
    width, height = Image.open(png).size
    return [(x0, y0) for y0 in tile_origins(height) for x0 in tile_origins(width)]
