"""trees: tiling is exact, boxes are clipped correctly, and scenes never cross splits."""

import json

import numpy as np
import pytest
from PIL import Image

from distill.datasets import prepare_embedded, trees

try:
    DATA = trees.deepforest_data_dir()
except (ModuleNotFoundError, FileNotFoundError) as e:  # the optional install is missing
    DATA, REASON = None, str(e)
needs_deepforest = pytest.mark.skipif(DATA is None, reason='deepforest wheel not installed')


def test_tile_origins_cover_with_full_tiles():
    assert trees.tile_origins(256) == [0]
    assert trees.tile_origins(400) == [0, 144]
    assert trees.tile_origins(512) == [0, 256]
    assert trees.tile_origins(1035) == [0, 195, 390, 584, 779]  # 779/4 = 194.75 apart
    for length in (300, 777, 2472):
        starts = trees.tile_origins(length)
        covered = np.zeros(length, bool)
        for s in starts:
            assert 0 <= s and s + 256 <= length
            covered[s:s + 256] = True
        assert covered.all()


def test_clip_to_tile_hand_computed():
    boxes = np.array([[10, 10, 30, 50],      # inside
                      [250, 0, 270, 10],     # 6 of 20 px wide inside -> 30 %
                      [300, 300, 320, 320],  # outside
                      [-10, 100, 10, 120]], dtype=float)  # half inside
    clipped, visible = trees.clip_to_tile(boxes, 0, 0, 256)
    np.testing.assert_allclose(clipped, [[10, 10, 30, 50], [250, 0, 256, 10], [0, 100, 10, 120]])
    np.testing.assert_allclose(visible, [1.0, 0.3, 0.5])
    shifted, _ = trees.clip_to_tile(boxes[:1], 5, 8, 256)
    np.testing.assert_allclose(shifted, [[5, 2, 25, 42]])


def test_missing_deepforest_message(monkeypatch):
    import importlib.util
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
    with pytest.raises(ModuleNotFoundError, match='pip install --no-deps deepforest==2.1.0'):
        trees.deepforest_data_dir()


@needs_deepforest
def test_split_by_scene_and_tiles_are_exact_crops(data_cache):
    root = prepare_embedded('trees')
    scenes_of = {}
    for split in ('train', 'val'):
        coco = json.loads((root / 'annotations' / f'instances_{split}.json').read_text())
        scenes_of[split] = {im['scene'] for im in coco['images']}
        assert scenes_of[split] == set(trees.SCENES[split])
        by_image = {}
        for a in coco['annotations']:
            by_image.setdefault(a['image_id'], []).append(a)
        for im in coco['images'][::7]:  # a sample of tiles: pixels equal the scene crop
            scene = np.asarray(Image.open(DATA / f"{im['scene']}.png").convert('RGB'))
            x0, y0 = im['tile_origin']
            tile = np.asarray(Image.open(root / split / im['file_name']))
            np.testing.assert_array_equal(tile, scene[y0:y0 + 256, x0:x0 + 256])
        scene_boxes = {s: trees.read_voc(DATA / f'{s}.xml') for s in trees.SCENES[split]}
        for im in coco['images']:
            for a in by_image.get(im['id'], []):
                x, y, w, h = a['bbox']
                assert 0 <= x and 0 <= y and x + w <= 256 and y + h <= 256 and w > 0 and h > 0
                if a['iscrowd'] == 0:  # a kept box is a clipped real crown of that scene
                    gx, gy = x + im['tile_origin'][0], y + im['tile_origin'][1]
                    sb = scene_boxes[im['scene']]
                    ix1, iy1 = np.maximum(sb[:, 0], gx), np.maximum(sb[:, 1], gy)
                    ix2, iy2 = np.minimum(sb[:, 2], gx + w), np.minimum(sb[:, 3], gy + h)
                    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
                    best = (sb[:, 2] - sb[:, 0]) * (sb[:, 3] - sb[:, 1])
                    assert (inter >= trees.MIN_VISIBLE * best - 1e-6).any()
    assert not scenes_of['train'] & scenes_of['val']
    # every annotated crown is in some tile of its split (the grid covers each scene)
    for split, scenes in trees.SCENES.items():
        coco = json.loads((root / 'annotations' / f'instances_{split}.json').read_text())
        assert sum(1 - a['iscrowd'] for a in coco['annotations']) >= sum(
            len(trees.read_voc(DATA / f'{s}.xml')) for s in scenes) * 0.9
