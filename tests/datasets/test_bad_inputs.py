"""Corrupt, foreign or empty dataset inputs fail with one-line errors naming the file.

Annotation files that are empty, not JSON or not COCO; annotation files without images; image
folders without the listed images; images that cannot be decoded (found when the sample is
loaded, also in a DataLoader worker); damaged embedded-dataset caches; unknown embedded names.
"""

import json
import os
import shutil

import pytest
from mmdet.registry import DATASETS
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from PIL import Image
from torch.utils.data import DataLoader

from distill.datasets import DatasetConfigError, digits_scenes, prepare_embedded
from distill.datasets.cache import ensure_prepared
from distill.errors import DatasetError, DistillError
from tests.datasets.test_coco_checks import _build, _folder

PIPELINE = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
            dict(type='Resize', scale=(64, 64), keep_ratio=True), dict(type='PackDetInputs')]


@pytest.fixture(autouse=True)
def mmdet_scope():
    init_default_scope('mmdet')  # other tests may have left another default scope current


def _error(fn, *parts):
    """Run ``fn``, expect a one-line DatasetConfigError containing every one of ``parts``."""
    with pytest.raises(DatasetConfigError) as e:
        fn()
    msg = str(e.value)
    assert '\n' not in msg, msg
    for part in parts:
        assert str(part) in msg, f'{part!r} not in {msg!r}'
    return e.value


def _coco(**changes):
    """The valid annotation of ``_folder`` with top-level fields replaced (None: removed)."""
    coco = dict(images=[dict(id=7, file_name='x.jpg', width=40, height=30)],
                annotations=[dict(id=3, image_id=7, category_id=1, bbox=[2, 3, 10, 12], area=1,
                                  iscrowd=0)],
                categories=[dict(id=1, name='a'), dict(id=2, name='b')])
    for key, value in changes.items():
        if value is None:
            coco.pop(key)
        else:
            coco[key] = value
    return coco


def _write_ann(root, content):
    (root / 'ann.json').write_text(content if isinstance(content, str) else json.dumps(content))
    return root


def test_error_types():
    assert issubclass(DatasetConfigError, DatasetError)
    assert issubclass(DatasetConfigError, DistillError)
    assert issubclass(DatasetConfigError, ValueError)


# --- the annotation file ---------------------------------------------------------------------

def test_empty_annotation_file(tmp_path):
    root = _write_ann(_folder(tmp_path), '')
    _error(lambda: _build(root), f"{root / 'ann.json'}: the annotation file is empty (0 bytes)",
           'regenerate or re-download it')


def test_annotation_file_is_binary(tmp_path):
    root = _folder(tmp_path)
    _error(lambda: _build(root, ann_file='images/x.jpg'),
           f"{root / 'images' / 'x.jpg'}: not a JSON text file", "starts with b'\\xff\\xd8",
           'point ann_file at the COCO .json annotation file')


def test_annotation_file_is_a_directory(tmp_path):
    root = _folder(tmp_path)
    (root / 'annotations').mkdir()
    (root / 'annotations' / 'instances_train.json').write_text('{}')
    _error(lambda: _build(root, ann_file='annotations'),
           f"annotation file '{root / 'annotations'}' is a directory",
           "set ann_file to the COCO .json file, e.g. one of ['instances_train.json']")


BAD_COCO = {
    'list': ('[]', 'the top level is a JSON array ([]), not an object'),
    'string': ('"hello"', "the top level is a JSON string ('hello'), not an object"),
    'empty object': ('{}', "field 'images' is missing (top-level fields: [])"),
    'no categories': (
        _coco(categories=None),
        "field 'categories' is missing (top-level fields: ['annotations', 'images'])"),
    'images not an array': (_coco(images={'7': 'x.jpg'}),
                            "field 'images' is a JSON object ({'7': 'x.jpg'}), expected an array"),
    'image not an object': (_coco(images=['x.jpg']),
                            "images[0] is a JSON string ('x.jpg'), expected an object"),
    'image without file_name': (
        _coco(images=[dict(id=7, width=40, height=30)]),
        "images[0] (id=7) has no field 'file_name' (its fields: ['height', 'id', 'width'])"),
    'image of width 0': (_coco(images=[dict(id=7, file_name='x.jpg', width=0, height=30)]),
                         "images[0] (id=7) file_name='x.jpg' has width=0, expected"),
    'annotation without area': (
        _coco(annotations=[dict(id=3, image_id=7, category_id=1, bbox=[2, 3, 10, 12])]),
        "annotations[0] (id=3) has no field 'area'"),
    'repeated annotation id': (
        _coco(annotations=[dict(id=3, image_id=7, category_id=1, bbox=[2, 3, 10, 12], area=1)] * 2),
        'annotations[1] repeats id=3 of annotations[0]'),
    'repeated image id': (
        _coco(images=[dict(id=7, file_name='x.jpg', width=40, height=30)] * 2),
        'images[1] repeats id=7 of images[0]'),
    'category without name': (_coco(categories=[dict(id=1)]),
                              "categories[0] (id=1) has no field 'name'"),
    'unknown image_id': (
        _coco(annotations=[dict(id=3, image_id=99, category_id=1, bbox=[2, 3, 10, 12], area=1)]),
        "annotations[0] (id=3) has image_id=99, which is not an id in 'images' (1 ids, e.g. [7])"),
    'unknown category_id': (
        _coco(annotations=[dict(id=3, image_id=7, category_id=9, bbox=[2, 3, 10, 12], area=1),
                           dict(id=4, image_id=7, category_id=8, bbox=[2, 3, 10, 12], area=1)]),
        "annotations[0] (id=3) has category_id=9, which is not an id in 'categories' (2 ids, "
        'e.g. [1, 2]), and so do 1 more annotations'),
    'bbox of strings': (
        _coco(annotations=[dict(id=3, image_id=7, category_id=1, bbox=['2', 3, 10, 12], area=1)]),
        "bbox=['2', 3, 10, 12] is not [x, y, w, h] (4 finite numbers)"),
}


@pytest.mark.parametrize('case', list(BAD_COCO))
def test_json_that_is_not_coco_detection(tmp_path, case):
    content, expected = BAD_COCO[case]
    root = _write_ann(_folder(tmp_path), content)
    err = _error(lambda: _build(root), f"{root / 'ann.json'}: ", expected)
    assert 'fix' in str(err) or 'point ann_file' in str(err)  # says what to do


def test_annotation_file_without_images(tmp_path):
    root = _write_ann(_folder(tmp_path), _coco(images=[], annotations=[]))
    _error(lambda: _build(root),
           f"{root / 'ann.json'}: field 'images' is an empty array (0 images)",
           'point ann_file at an annotation file that lists images')


def test_filter_cfg_removing_every_image(tmp_path):
    # the only box is of category 'b'; with classes ('a',) filter_empty_gt drops the only image
    ann = [dict(id=3, image_id=7, category_id=2, bbox=[2, 3, 10, 12], area=1, iscrowd=0)]
    root = _write_ann(_folder(tmp_path), _coco(annotations=ann))
    _error(lambda: _build(root, metainfo=dict(classes=('a', )),
                          filter_cfg=dict(filter_empty_gt=True)),
           f"{root / 'ann.json'}: filter_cfg={{'filter_empty_gt': True}} removed all 1 images",
           "metainfo.classes=['a']", 'relax filter_cfg')


# --- the image folder ------------------------------------------------------------------------

def test_image_folder_without_the_listed_images(tmp_path):
    root = _folder(tmp_path)
    (root / 'images' / 'x.jpg').rename(root / 'images' / 'other.jpg')
    _error(lambda: _build(root), '1 of 1 listed images not found',
           f"none of them is in the image folder '{root / 'images'}/', which holds 1 entries, "
           "e.g. ['other.jpg']", 'check data_prefix.img and data_root')


def test_listed_image_is_a_directory(tmp_path):
    root = _folder(tmp_path)
    (root / 'images' / 'x.jpg').unlink()
    (root / 'images' / 'x.jpg').mkdir()
    _error(lambda: _build(root), f"{root / 'ann.json'}: listed image "
           f"'{root / 'images' / 'x.jpg'}' is a directory, not an image file",
           'fix their file_name')


# --- corrupt images, found when the sample is loaded -----------------------------------------

def _corrupt(path, kind):
    """Damage the JPEG at ``path`` in one of several ways."""
    Image.effect_noise((40, 30), 60).convert('RGB').save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes({'truncated': data[:len(data) * 9 // 10], 'random bytes': os.urandom(600),
                      'empty': b'', 'text': b'this is a text file, not a JPEG\n'}[kind])


PROBLEMS = {'truncated': 'cannot be decoded as an image', 'random bytes': 'cannot be decoded',
            'empty': 'is empty (0 bytes)', 'text': "starting b'this is a te'"}


@pytest.mark.parametrize('test_mode', [False, True], ids=['train', 'test'])
@pytest.mark.parametrize('kind', list(PROBLEMS))
def test_corrupt_image_named_when_loaded(tmp_path, kind, test_mode):
    root = _folder(tmp_path)
    ds = _build(root, pipeline=PIPELINE, test_mode=test_mode)  # start-up does not decode
    assert ds[0]['inputs'].shape[-2:] == (48, 64)
    _corrupt(root / 'images' / 'x.jpg', kind)
    err = _error(lambda: ds[0], f"image '{root / 'images' / 'x.jpg'}' (img_id=7, listed in "
                 f"{root / 'ann.json'})", PROBLEMS[kind], '(loading it raised ',
                 'replace the file, or remove the image and its annotations')
    assert err.__cause__ is not None  # mmcv's own error stays attached


def test_corrupt_image_not_skipped_by_ignore_empty(tmp_path):
    # LoadImageFromFile(ignore_empty=True) returns None for an empty file, and mmengine's
    # train-mode __getitem__ then silently draws other samples (max_refetch times)
    root = _folder(tmp_path)
    _corrupt(root / 'images' / 'x.jpg', 'empty')
    pipeline = [dict(type='LoadImageFromFile', ignore_empty=True)] + PIPELINE[1:]
    ds = _build(root, pipeline=pipeline, max_refetch=3)
    _error(lambda: ds[0], f"image '{root / 'images' / 'x.jpg'}'", 'is empty (0 bytes)',
           'the pipeline returned None for it')
    # check_images=False leaves a None from the pipeline to mmengine, as documented
    ds = _build(root, pipeline=pipeline, max_refetch=3, check_images=False)
    with pytest.raises(Exception, match='Cannot find valid image after 3'):
        ds[0]


def test_pipeline_error_not_about_the_image_is_unchanged(tmp_path):
    root = _folder(tmp_path)  # a good image, but the annotation has no mask to load
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', with_bbox=True, with_mask=True)]
    ds = _build(root, pipeline=pipeline)
    with pytest.raises(KeyError, match='mask'):
        ds[0]


def test_corrupt_image_in_dataloader_worker_keeps_one_line(tmp_path):
    root = _folder(tmp_path)
    _corrupt(root / 'images' / 'x.jpg', 'text')
    ds = _build(root, pipeline=PIPELINE)
    batches = iter(DataLoader(ds, batch_size=1, num_workers=1, collate_fn=pseudo_collate))
    try:
        _error(lambda: next(batches), f"image '{root / 'images' / 'x.jpg'}'",
               'cannot be decoded', '(raised in DataLoader worker process 0)')
    finally:
        batches._shutdown_workers()


# --- embedded datasets and their cache -------------------------------------------------------

def _small_cache(root, seed=3):
    """A small digits-scenes cache (3 train, 2 val images) under ``root``."""
    return ensure_prepared(
        digits_scenes.NAME, digits_scenes.VERSION, seed,
        lambda out, s: digits_scenes.build(out, s, num_images=dict(train=3, val=2)), root)


def test_unknown_embedded_name():
    for call in (lambda: prepare_embedded('digit-scenes'),
                 lambda: DATASETS.build(dict(type='EmbeddedCocoDataset', name='digit-scenes',
                                             split='val'))):
        _error(call, "unknown embedded dataset name='digit-scenes'",
               "set name to one of ['digits-scenes', 'trees']", 'CheckedCocoDataset')


@pytest.mark.parametrize('damage', ['truncated json', 'deleted json', 'edited json'])
def test_damaged_cache_json(tmp_path, damage):
    target = _small_cache(tmp_path)
    ann = target / 'annotations' / 'instances_val.json'
    if damage == 'truncated json':
        ann.write_bytes(ann.read_bytes()[:100])
    elif damage == 'deleted json':
        ann.unlink()
    else:
        ann.write_text(ann.read_text().replace('"iscrowd":0', '"iscrowd":1', 1))
    expected = (f"listed in {target / 'MANIFEST.json'} (sha256 field "
                "'annotations/instances_val.json') but missing" if damage == 'deleted json'
                else 'sha256 is ')
    _error(lambda: prepare_embedded('digits-scenes', seed=3, root=str(tmp_path)),
           f'{ann}', expected, f'delete the directory {target} and it is generated again')


@pytest.mark.parametrize('content', [b'', b'{"name": "digits-sc', b'\xff\xfe\x00'])
def test_corrupt_manifest(tmp_path, content):
    target = _small_cache(tmp_path)
    (target / 'MANIFEST.json').write_bytes(content)
    _error(lambda: prepare_embedded('digits-scenes', seed=3, root=str(tmp_path)),
           f"{target / 'MANIFEST.json'}: not valid JSON", f'delete the directory {target}')


def test_manifest_of_another_dataset(tmp_path):
    target = _small_cache(tmp_path)
    manifest = json.loads((target / 'MANIFEST.json').read_text())
    (target / 'MANIFEST.json').write_text(json.dumps(dict(manifest, seed=4)))
    _error(lambda: prepare_embedded('digits-scenes', seed=3, root=str(tmp_path)),
           f"{target / 'MANIFEST.json'}: field 'seed' is 4, expected 3",
           f'delete the directory {target}')


def test_cache_without_manifest_is_regenerated(tmp_path):
    # the existing recovery: a directory without MANIFEST.json is deleted and generated again
    target = _small_cache(tmp_path)
    (target / 'MANIFEST.json').unlink()
    shutil.rmtree(target / 'val')
    assert _small_cache(tmp_path) == target
    assert (target / 'MANIFEST.json').is_file() and len(list((target / 'val').iterdir())) == 2


def test_embedded_dataset_damaged_images(tmp_path, monkeypatch):
    monkeypatch.setenv('DISTILL_DATA', str(tmp_path))  # never damage the session cache
    target = _small_cache(tmp_path)
    cfg = dict(type='EmbeddedCocoDataset', name='digits-scenes', split='val', seed=3,
               pipeline=PIPELINE)
    ds = DATASETS.build(cfg)
    assert len(ds) == 2
    hint = (f"embedded dataset 'digits-scenes' (seed 3): if the cache was damaged, delete the "
            f'directory {target} and it is generated again on next use')
    # a corrupt image: found when loaded (inherited from CheckedCocoDataset), with the hint
    image = target / 'val' / sorted(os.listdir(target / 'val'))[0]
    image.write_bytes(image.read_bytes()[:300])
    index = [d['img_path'] for d in (ds.get_data_info(i) for i in range(2))].index(str(image))
    _error(lambda: ds[index], f"image '{image}'", 'cannot be decoded', hint)
    # a deleted image: found at start-up
    image.unlink()
    _error(lambda: DATASETS.build(cfg), '1 of 2 listed images not found', hint)
