"""COCO-format datasets that fail early and clearly on bad input, and the embedded datasets.

mmdet's ``CocoDataset`` accepts a wrong ``data_root`` until the first image fails to load deep in
a dataloader worker, silently drops annotations whose image or category id is not in the file,
and silently keeps boxes that stick out of their image. ``CheckedCocoDataset`` checks the
annotation file (JSON, COCO structure, ids), the image folder, the class names and every box when
the dataset is built, and an image that cannot be decoded when that image is loaded. Each error is
a one-line :class:`DatasetConfigError` that names the file, the field and the value and says what
to do.
"""

from __future__ import annotations

import os
import os.path as osp

import mmcv
from mmdet.datasets import CocoDataset
from mmdet.evaluation import CocoMetric
from mmdet.registry import DATASETS, METRICS
from mmengine import fileio

from distill.errors import one_line

from .coco_json import COCO_SHAPE, FIX_FILE, CheckedCOCO, _is_number, _name
from .errors import DatasetConfigError, short
from .registry import embedded_info, prepare_embedded


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """:class:`mmdet.datasets.CocoDataset` with validation of files, classes, boxes and images.

    When the dataset is built: ``data_root``, the annotation file (a file, not empty, JSON, a COCO
    detection file: :func:`distill.datasets.coco_json.check_coco`), the image folder, every
    listed image file, the class names and every box. When a sample is loaded: if the pipeline
    raises, or returns ``None``
    (e.g. ``LoadImageFromFile(ignore_empty=True)``, which mmengine answers by silently drawing
    another sample), and the sample's image cannot be read or decoded, a
    :class:`DatasetConfigError` names the image and the annotation file. Other pipeline errors
    propagate unchanged. Decoding every image at start-up would be too slow for COCO.

    Args:
        box_tolerance (float): How far (px) a box may extend past the image border before it is
            an error. COCO's own boxes stay within 1 px. Defaults to 1.0.
        check_images (bool): Check that every image file listed in the annotations exists, and
            that an image for which the pipeline returned ``None`` decodes. With False, missing
            images are only found when loaded and a ``None`` from the pipeline is left to
            mmengine (which draws another sample). Defaults to True.
        **kwargs: Everything :class:`mmdet.datasets.CocoDataset` takes (``data_root``,
            ``ann_file``, ``data_prefix``, ``metainfo``, ``pipeline``, ...).
    """

    COCOAPI = CheckedCOCO

    def __init__(self, *args, box_tolerance: float = 1.0, check_images: bool = True, **kwargs):
        self.box_tolerance = box_tolerance
        self.check_images = check_images
        self._decodable = set()  # indices whose image decoded after the pipeline returned None
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        self._check_paths()
        try:
            data_list = super().load_data_list()
        except (KeyError, TypeError) as e:
            raise DatasetConfigError(
                f'{self.ann_file}: not a COCO detection file (missing or malformed field {e}); '
                f'{COCO_SHAPE}: {FIX_FILE}') from e
        if self.check_images:
            self._check_image_files(data_list)
        return data_list

    def filter_data(self) -> list[dict]:
        kept = super().filter_data()
        if self.data_list and not kept:
            raise DatasetConfigError(
                f'{self.ann_file}: filter_cfg={self.filter_cfg} removed all '
                f'{len(self.data_list)} images (filter_empty_gt drops the images without a box '
                f"of metainfo.classes={list(self.metainfo['classes'])}, min_size the smaller "
                'images); check the classes and boxes, or relax filter_cfg')
        return kept

    def _check_paths(self) -> None:
        root = self.data_root or ''
        if root and not osp.isdir(root):
            raise DatasetConfigError(
                f'dataset data_root={root!r} is not a directory (cwd {os.getcwd()}); fix '
                'data_root (a relative one is resolved against the cwd)')
        if osp.isdir(self.ann_file):
            jsons = sorted(f for f in os.listdir(self.ann_file) if f.endswith('.json'))
            inside = (f'e.g. one of {short(jsons[:4], 120)}' if jsons
                      else 'the directory holds no .json file')
            raise DatasetConfigError(
                f'annotation file {self.ann_file!r} is a directory (ann_file joined with '
                f'data_root={root!r}); set ann_file to the COCO .json file, {inside}')
        if not osp.isfile(self.ann_file):
            raise DatasetConfigError(
                f'annotation file {self.ann_file!r} not found (ann_file joined with '
                f'data_root={root!r}); fix ann_file or data_root')
        img_dir = self.data_prefix.get('img', '')
        if img_dir and not osp.isdir(img_dir):
            raise DatasetConfigError(
                f"image folder data_prefix.img={img_dir!r} is not a directory (joined with "
                f'data_root={root!r}); annotation file {self.ann_file!r}: fix data_prefix.img '
                'or data_root')

    def _check_image_files(self, data_list: list[dict]) -> None:
        dirs, missing = [], []
        for d in data_list:
            if not osp.isfile(d['img_path']):
                (dirs if osp.isdir(d['img_path']) else missing).append(d['img_path'])
        if dirs:
            raise DatasetConfigError(
                f'{self.ann_file}: listed image {dirs[0]!r} is a directory, not an image file '
                f'({len(dirs)} of {len(data_list)} listed images are directories); fix their '
                'file_name in the annotation file, or data_prefix.img')
        if not missing:
            return
        if len(missing) < len(data_list):
            todo = 'restore them, or remove them and their annotations from the annotation file'
        else:
            img_dir = self.data_prefix.get('img') or self.data_root or os.getcwd()
            names = sorted(os.listdir(img_dir)) if osp.isdir(img_dir) else []
            holds = (f'holds {len(names)} entries, e.g. {short(names[:3], 80)}' if names
                     else 'is empty')
            todo = (f'none of them is in the image folder {img_dir!r}, which {holds}: check '
                    'data_prefix.img and data_root, and that the folder belongs to this file')
        raise DatasetConfigError(
            f'{self.ann_file}: {len(missing)} of {len(data_list)} listed images not found, e.g. '
            f'{short(missing[:3], 200)}; {todo}')

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
                f'(its categories: {short(names, 200)}); set metainfo.classes to names of this '
                "list (and the head's num_classes to their number)")
        self._classes_checked = True

    def _check_box(self, img: dict, ann: dict) -> None:
        where = (f"{self.ann_file}: annotation id={ann.get('id')} of image id={img.get('id')} "
                 f"file_name={img.get('file_name')!r} ({img.get('width')}x{img.get('height')})")
        box = ann.get('bbox')
        if not (isinstance(box, (list, tuple)) and len(box) == 4
                and all(_is_number(v) for v in box)):
            raise DatasetConfigError(
                f'{where}: bbox={short(box)} is not [x, y, w, h] (4 finite numbers); fix the box '
                'or remove the annotation')
        x, y, w, h = box
        width, height, tol = img['width'], img['height'], self.box_tolerance
        if w < 0 or h < 0:
            raise DatasetConfigError(
                f'{where}: bbox={list(box)} has a negative width/height; fix the box (COCO boxes '
                'are [x, y, width, height]) or remove the annotation')
        if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
            raise DatasetConfigError(
                f'{where}: bbox={list(box)} (x, y, w, h) lies outside the image '
                f'[0, {width}] x [0, {height}] (tolerance {tol} px); fix the box or the image '
                'size, or raise box_tolerance')

    def prepare_data(self, idx: int):
        """The sample after the pipeline; an unreadable image is a :class:`DatasetConfigError`.

        Raises:
            DatasetConfigError: The pipeline raised, or returned ``None`` (``check_images``
                only), and the sample's image cannot be read or decoded.
        """
        data_info = self.get_data_info(idx)
        path = data_info.get('img_path')
        try:
            data = self.pipeline(data_info)
        except Exception as e:
            problem = self._image_problem(path) if path else None
            if problem is None:
                raise  # not about this image: unchanged
            raise self._image_error(data_info, problem, f'loading it raised {_name(e)}') from e
        if data is None and path and self.check_images and idx not in self._decodable:
            problem = self._image_problem(path)
            if problem is not None:
                raise self._image_error(
                    data_info, problem, 'the pipeline returned None for it, e.g. '
                    'LoadImageFromFile(ignore_empty=True), and mmengine would silently train '
                    'on other images instead')
            self._decodable.add(idx)
        return data

    def _image_loader(self):
        """The pipeline's image-loading transform (``LoadImageFromFile``), if any."""
        for t in getattr(self.pipeline, 'transforms', []):
            if hasattr(t, 'imdecode_backend') and hasattr(t, 'color_type'):
                return t
        return None

    def _image_problem(self, path: str) -> str | None:
        """What is wrong with the image file at ``path`` (read and decoded as the pipeline
        does), or None when it decodes."""
        loader = self._image_loader()
        backend_args = getattr(loader, 'backend_args', None) or self.backend_args
        try:
            data = fileio.get(path, backend_args=backend_args)
        except IsADirectoryError:
            return 'is a directory, not an image file'
        except FileNotFoundError:
            return 'does not exist'
        except Exception as e:  # any read failure is the answer
            return f'cannot be read ({_name(e)}: {one_line(e)})'
        if not data:
            return 'is empty (0 bytes)'
        try:
            img = mmcv.imfrombytes(data, flag=getattr(loader, 'color_type', 'color'),
                                   backend=getattr(loader, 'imdecode_backend', None))
        except Exception:  # a decoder error means: not decodable
            img = None
        if img is None:
            return (f'cannot be decoded as an image: corrupt, truncated or not an image '
                    f'({len(data)} bytes, starting {data[:12]!r})')
        return None

    def _image_error(self, data_info: dict, problem: str, how: str) -> DatasetConfigError:
        return DatasetConfigError(
            f"image {data_info['img_path']!r} (img_id={data_info.get('img_id')!r}, listed in "
            f'{self.ann_file}) {problem} ({how}); replace the file, or remove the image and '
            'its annotations from the annotation file')


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
                f"embedded dataset {name!r}: split={short(split)} is not one of its splits; set "
                "split='train' or 'val'")
        root = prepare_embedded(name, seed)
        self._cache_hint = (
            f'the file is part of the generated cache of embedded dataset {name!r} (seed '
            f'{seed}): if the cache was damaged, delete the directory {root} and it is '
            'generated again on next use')
        kwargs.setdefault('metainfo', dict(classes=info.classes))
        super().__init__(data_root=str(root), ann_file=f'annotations/instances_{split}.json',
                         data_prefix=dict(img=f'{split}/'), **kwargs)

    def full_init(self):
        try:
            super().full_init()
        except DatasetConfigError as e:
            raise DatasetConfigError(f'{e}; {self._cache_hint}') from e

    def prepare_data(self, idx: int):
        try:
            return super().prepare_data(idx)
        except DatasetConfigError as e:
            raise DatasetConfigError(f'{e}; {self._cache_hint}') from e


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
        if split not in ('train', 'val'):
            raise DatasetConfigError(
                f"EmbeddedCocoMetric {name!r}: split={short(split)} is not one of its splits; "
                "set split='train' or 'val'")
        root = prepare_embedded(name, seed)
        super().__init__(ann_file=str(root / 'annotations' / f'instances_{split}.json'), **kwargs)
        self.evaluated_images_only = evaluated_images_only

    def compute_metrics(self, results: list) -> dict:
        if self.evaluated_images_only:
            self.img_ids = sorted({pred['img_id'] for _, pred in results})
        return super().compute_metrics(results)
