"""The tiny COCO-format folder shared by the COCO config tests."""

import json
import shutil

import pytest
from mmdet.datasets import CocoDataset

from distill.datasets import prepare_embedded


@pytest.fixture(scope='session')
def tiny_coco(tmp_path_factory, data_cache):
    src = prepare_embedded('digits-scenes')
    val = json.loads((src / 'annotations' / 'instances_val.json').read_text())
    root = tmp_path_factory.mktemp('coco')
    names = CocoDataset.METAINFO['classes']
    images = val['images'][:3]
    anns = [a for a in val['annotations'] if a['image_id'] in {im['id'] for im in images}]
    for split in ('train2017', 'val2017'):
        (root / split).mkdir()
        for im in images:
            shutil.copy(src / 'val' / im['file_name'], root / split / im['file_name'])
        coco = dict(images=images, annotations=anns,
                    categories=[dict(id=i + 1, name=n) for i, n in enumerate(names)])
        (root / 'annotations').mkdir(exist_ok=True)
        (root / 'annotations' / f'instances_{split}.json').write_text(json.dumps(coco))
    return root
