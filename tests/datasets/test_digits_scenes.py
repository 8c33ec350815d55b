"""digits-scenes: deterministic generation, exact boxes, disjoint handwriting between splits."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from distill.datasets import digits_scenes as ds
from distill.datasets import prepare_embedded
from distill.datasets.cache import sha256_file

SMALL = dict(train=12, val=4)


@pytest.fixture(scope='module')
def photos():
    return ds.load_backgrounds()


def test_same_seed_same_json_other_seed_other_json(tmp_path):
    for name, seed in (('a', 0), ('b', 0), ('c', 1)):
        ds.build(tmp_path / name, seed, num_images=SMALL)
    for split in ('train', 'val'):
        h = {n: sha256_file(tmp_path / n / 'annotations' / f'instances_{split}.json')
             for n in 'abc'}
        assert h['a'] == h['b']
        assert h['a'] != h['c']
    # the pixels are reproducible too
    a = (tmp_path / 'a' / 'train' / '000003.jpg').read_bytes()
    assert a == (tmp_path / 'b' / 'train' / '000003.jpg').read_bytes()


def _tight_box_naive(mask):
    """Tight [x, y, w, h] by scanning rows and columns one by one (independent of numpy.nonzero)."""
    h, w = mask.shape
    rows = [y for y in range(h) if any(mask[y, x] for x in range(w))]
    cols = [x for x in range(w) if any(mask[y, x] for y in range(h))]
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1),
            float(rows[-1] - rows[0] + 1)]


def test_boxes_tightly_bound_pasted_masks(photos):
    imgs, labels = ds.load_digit_pool('train')
    rng = np.random.default_rng(123)
    n_occluded = 0
    for _ in range(12):
        scene = ds.render_scene(rng, photos, imgs, labels)
        image = scene['image'].astype(int)
        background = scene['background'].astype(int)
        union = np.zeros(image.shape[:2], bool)
        for mask in scene['masks']:
            assert not (union & mask).any()  # visible masks never overlap
            union |= mask
            assert ds.mask_to_coco(mask)['bbox'] == _tight_box_naive(mask)
            # ink really is there: the pasted pixels differ clearly from the photo
            assert np.abs(image[mask] - background[mask]).mean() > 20
        # outside every digit, the photo is untouched to the pixel
        assert (image[~union] == background[~union]).all()
        # visible = pasted minus what later digits cover, and never below 60 % of it
        for vis, full in zip(scene['masks'], scene['pasted_masks']):
            assert not (vis & ~full).any()
            assert vis.sum() >= (1 - ds.MAX_OCCLUDED) * full.sum()
            n_occluded += int(vis.sum() < full.sum())
        assert len(scene['labels']) == len(scene['masks']) == len(scene['pasted_masks'])
    assert n_occluded > 0  # some occlusion is generated


def test_json_boxes_match_rle_masks_via_pycocotools(data_cache):
    root = prepare_embedded('digits-scenes', seed=0)
    coco = json.loads((root / 'annotations' / 'instances_val.json').read_text())
    images = {im['id']: im for im in coco['images']}
    assert len(coco['images']) == ds.NUM_IMAGES['val']
    for ann in coco['annotations']:
        rle = dict(ann['segmentation'], counts=ann['segmentation']['counts'].encode())
        assert mask_utils.toBbox(rle).tolist() == ann['bbox']
        assert int(mask_utils.area(rle)) == ann['area']
        im = images[ann['image_id']]
        x, y, w, h = ann['bbox']
        assert 0 <= x and 0 <= y and x + w <= im['width'] and y + h <= im['height']
        assert max(im['width'], im['height']) == ds.LONG_SIDE
        assert ds.SHORT_SIDE[0] <= min(im['width'], im['height']) <= ds.SHORT_SIDE[1]
    cats = sorted({a['category_id'] for a in coco['annotations']})
    assert cats == list(range(1, 11))


def test_cache_is_reused_not_regenerated(data_cache):
    root = prepare_embedded('digits-scenes', seed=0)
    manifest = json.loads((root / 'MANIFEST.json').read_text())
    stamp = (root / 'MANIFEST.json').stat().st_mtime_ns
    assert prepare_embedded('digits-scenes', seed=0) == root
    assert (root / 'MANIFEST.json').stat().st_mtime_ns == stamp
    for rel, digest in manifest['sha256'].items():
        assert sha256_file(root / rel) == digest
    assert manifest['summary']['train']['images'] == ds.NUM_IMAGES['train']


def test_val_handwriting_disjoint_from_train():
    from sklearn.datasets import load_digits
    all_imgs = load_digits().images / 16.0
    train, _ = ds.load_digit_pool('train')
    val, _ = ds.load_digit_pool('val')
    assert len(train) + len(val) == len(all_imgs)
    np.testing.assert_array_equal(np.concatenate([train, val]), all_imgs.astype(np.float32))
