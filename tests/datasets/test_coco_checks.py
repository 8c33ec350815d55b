"""Broken dataset configs and annotation files fail with messages naming file, field and value."""

import json

import pytest
from mmdet.registry import DATASETS
from mmengine.registry import init_default_scope
from PIL import Image

from distill.datasets import DatasetConfigError


@pytest.fixture(autouse=True)
def mmdet_scope():
    init_default_scope('mmdet')  # other tests may have left another default scope current


def _folder(tmp_path, bbox=(2, 3, 10, 12), classes=('a', 'b')):
    (tmp_path / 'images').mkdir()
    Image.new('RGB', (40, 30)).save(tmp_path / 'images' / 'x.jpg')
    coco = dict(images=[dict(id=7, file_name='x.jpg', width=40, height=30)],
                annotations=[dict(id=3, image_id=7, category_id=1, bbox=list(bbox), area=1,
                                  iscrowd=0)],
                categories=[dict(id=i + 1, name=c) for i, c in enumerate(classes)])
    (tmp_path / 'ann.json').write_text(json.dumps(coco))
    return tmp_path


def _build(root, **over):
    cfg = dict(type='CheckedCocoDataset', data_root=str(root), ann_file='ann.json',
               data_prefix=dict(img='images/'), metainfo=dict(classes=('a', 'b')), pipeline=[])
    cfg.update(over)
    return DATASETS.build(cfg)


def test_valid_folder_loads(tmp_path):
    ds = _build(_folder(tmp_path))
    assert len(ds) == 1
    assert ds[0]['instances'][0]['bbox'] == [2, 3, 12, 15]


def test_wrong_data_root(tmp_path):
    with pytest.raises(DatasetConfigError, match=r"data_root='.*nowhere' is not a directory"):
        _build(tmp_path / 'nowhere')


def test_missing_annotation_file(tmp_path):
    root = _folder(tmp_path)
    with pytest.raises(DatasetConfigError,
                       match=r"annotation file '.*missing\.json' not found"):
        _build(root, ann_file='missing.json')


def test_missing_image_folder(tmp_path):
    root = _folder(tmp_path)
    with pytest.raises(DatasetConfigError, match=r"data_prefix.img='.*imgs/' is not a directory"):
        _build(root, data_prefix=dict(img='imgs/'))


def test_box_outside_image(tmp_path):
    root = _folder(tmp_path, bbox=(35, 3, 10, 12))
    with pytest.raises(DatasetConfigError) as e:
        _build(root)
    msg = str(e.value)
    assert 'ann.json' in msg and 'annotation id=3' in msg and "file_name='x.jpg'" in msg
    assert 'bbox=[35, 3, 10, 12]' in msg and '[0, 40] x [0, 30]' in msg


def test_class_not_in_file(tmp_path):
    root = _folder(tmp_path)
    with pytest.raises(DatasetConfigError, match=r"metainfo.classes \['c'\] are not categories"):
        _build(root, metainfo=dict(classes=('a', 'c')))


def test_corrupt_json(tmp_path):
    root = _folder(tmp_path)
    (root / 'ann.json').write_text('{"images": [')
    with pytest.raises(DatasetConfigError, match=r'ann\.json: not valid JSON'):
        _build(root)


def test_missing_image_file(tmp_path):
    root = _folder(tmp_path)
    (root / 'images' / 'x.jpg').unlink()
    with pytest.raises(DatasetConfigError, match=r"1 of 1 listed images not found.*x\.jpg"):
        _build(root)
