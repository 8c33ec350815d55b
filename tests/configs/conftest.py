"""The tiny COCO-format folder shared by the COCO config tests."""

import pytest
from mmdet.datasets import CocoDataset

from distill.datasets.registry import write_coco_folder


@pytest.fixture(scope='session')
def tiny_coco(tmp_path_factory, data_cache):
    return write_coco_folder(tmp_path_factory.mktemp('coco'), CocoDataset.METAINFO['classes'])
