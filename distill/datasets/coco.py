"""COCO-format datasets that fail early and clearly on bad input, and the embedded datasets.

mmdet's ``CocoDataset`` accepts a wrong ``data_root`` until the first image fails to load deep in
a dataloader worker, and silently keeps boxes that stick out of their image. ``CheckedCocoDataset``
checks the annotation file, the image folder, the class names and every box when the dataset is
built, and names the file, field and value in its error.
"""

from __future__ import annotations

import json
import os
import os.path as osp

from mmdet.datasets import CocoDataset
from mmdet.evaluation import CocoMetric
from mmdet.registry import DATASETS, METRICS

from .registry import embedded_info, prepare_embedded


class DatasetConfigError(ValueError):
    """A dataset config or annotation file is wrong; the message names file, field and value."""


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """:class:`mmdet.datasets.CocoDataset` with validation of paths, classes and boxes.

    Args:
        box_tolerance (float): How far (px) a box may extend past the image border before it is
            an error. COCO's own boxes stay within 1 px. Defaults to 1.0.
        check_images (bool): Check that every image file listed in the annotations exists.
            Defaults to True.
        **kwargs: Everything :class:`mmdet.datasets.CocoDataset` takes (``data_root``,
            ``ann_file``, ``data_prefix``, ``metainfo``, ``pipeline``, ...).
    """

    def __init__(self, *args, box_tolerance: float = 1.0, check_images: bool = True, **kwargs):
        self.box_tolerance = box_tolerance
        self.check_images = check_images
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        self._check_paths()
        try:
            data_list = super().load_data_list()
        except json.JSONDecodeError as e:
            raise DatasetConfigError(f'{self.ann_file}: not valid JSON ({e})') from e
        except (KeyError, TypeError) as e:
            raise DatasetConfigError(
                f'{self.ann_file}: not a COCO detection file (missing or malformed field {e}); '
                "expected 'images', 'annotations' and 'categories'") from e
        if self.check_images:
            self._check_image_files(data_list)
        return data_list

    def _check_paths(self) -> None:
        root = self.data_root or ''
        if root and not osp.isdir(root):
            raise DatasetConfigError(f'dataset data_root={root!r} is not a directory '
                                     f'(cwd {os.getcwd()})')
        if not osp.isfile(self.ann_file):
            raise DatasetConfigError(
                f'annotation file {self.ann_file!r} not found (ann_file joined with '
                f'data_root={root!r})')
        img_dir = self.data_prefix.get('img', '')
        if img_dir and not osp.isdir(img_dir):
            raise DatasetConfigError(
                f"image folder data_prefix.img={img_dir!r} is not a directory (joined with "
                f'data_root={root!r}); annotation file {self.ann_file!r}')

    def _check_image_files(self, data_list: list[dict]) -> None:
        missing = [d['img_path'] for d in data_list if not osp.isfile(d['img_path'])]
        if missing:
            raise DatasetConfigError(
                f'{self.ann_file}: {len(missing)} of {len(data_list)} listed images not found, '
                f'e.g. {missing[:3]}')

    def parse_data_info(self, raw_data_info: dict):
        if not hasattr(self, '_classes_checked'):
            self._check_classes()
        img = raw_data_info['raw_img_info']
        for ann in raw_data_info['raw_ann_info']:
            self._check_box(img, ann)
        return super().parse_data_info(raw_data_info)

    def _check_classes(self) -> None:
        names = [c['name'] for c in self.coco.dataset.get('categories', [])]
        missing = [c for c in self.metainfo['classes'] if c not in names]
        if missing:
            raise DatasetConfigError(
                f'{self.ann_file}: metainfo.classes {missing} are not categories of this file '
                f'(its categories: {names})')
        self._classes_checked = True

    def _check_box(self, img: dict, ann: dict) -> None:
        where = (f"{self.ann_file}: annotation id={ann.get('id')} of image id={img.get('id')} "
                 f"file_name={img.get('file_name')!r} ({img.get('width')}x{img.get('height')})")
        box = ann.get('bbox')
        if not (isinstance(box, (list, tuple)) and len(box) == 4):
            raise DatasetConfigError(f'{where}: bbox={box!r} is not [x, y, w, h]')
        x, y, w, h = box
        width, height, tol = img['width'], img['height'], self.box_tolerance
        if w < 0 or h < 0:
            raise DatasetConfigError(f'{where}: bbox={list(box)} has a negative width/height')
        if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
            raise DatasetConfigError(
                f'{where}: bbox={list(box)} (x, y, w, h) lies outside the image '
                f'[0, {width}] x [0, {height}] (tolerance {tol} px)')


@DATASETS.register_module()
class EmbeddedCocoDataset(CheckedCocoDataset):
    """One split of an embedded dataset (``digits-scenes`` or ``trees``), generated on first use.

    Args:
        name (str): Embedded dataset name.
        split (str): ``'train'`` or ``'val'``.
        seed (int): Generation seed (``digits-scenes``); a different seed is a different dataset.
        **kwargs: Passed to :class:`CheckedCocoDataset` (``pipeline``, ``filter_cfg``, ...).
            ``data_root``/``ann_file``/``data_prefix`` are set from the cache; ``metainfo``
            defaults to the dataset's classes.
    """

    def __init__(self, name: str, split: str, seed: int = 0, **kwargs):
        info = embedded_info(name)
        if split not in ('train', 'val'):
            raise DatasetConfigError(
                f"dataset {name!r}: split={split!r}, expected 'train' or 'val'")
        root = prepare_embedded(name, seed)
        kwargs.setdefault('metainfo', dict(classes=info.classes))
        super().__init__(data_root=str(root), ann_file=f'annotations/instances_{split}.json',
                         data_prefix=dict(img=f'{split}/'), **kwargs)


@METRICS.register_module()
class EmbeddedCocoMetric(CocoMetric):
    """:class:`mmdet.evaluation.CocoMetric` against an embedded dataset's annotation file.

    Args:
        name (str): Embedded dataset name.
        split (str): Split whose ``instances_<split>.json`` is the ground truth.
        seed (int): Generation seed, as for :class:`EmbeddedCocoDataset`.
        evaluated_images_only (bool): Score only the images that were predicted (the dataset
            was restricted with ``indices``, e.g. a tuning split carved from train); by default
            every image of the annotation file counts, as mmdet's CocoMetric.
        **kwargs: Passed to :class:`mmdet.evaluation.CocoMetric`.
    """

    def __init__(self, name: str, split: str = 'val', seed: int = 0,
                 evaluated_images_only: bool = False, **kwargs):
        root = prepare_embedded(name, seed)
        super().__init__(ann_file=str(root / 'annotations' / f'instances_{split}.json'), **kwargs)
        self.evaluated_images_only = evaluated_images_only

    def compute_metrics(self, results: list) -> dict:
        if self.evaluated_images_only:
            self.img_ids = sorted({pred['img_id'] for _, pred in results})
        return super().compute_metrics(results)
