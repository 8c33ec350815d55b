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

import json
import math
import os
import os.path as osp

import mmcv
from mmdet.datasets import CocoDataset
from mmdet.datasets.api_wrappers import COCO
from mmdet.evaluation import CocoMetric
from mmdet.registry import DATASETS, METRICS
from mmengine import fileio

from distill.errors import one_line

from .errors import DatasetConfigError, short
from .registry import embedded_info, prepare_embedded

#: The fields every entry of a COCO detection file needs (mmdet reads each of them).
REQUIRED_FIELDS = dict(
    images=('id', 'file_name', 'width', 'height'),
    annotations=('id', 'image_id', 'category_id', 'bbox', 'area'),
    categories=('id', 'name'))
COCO_SHAPE = ("a COCO detection file is a JSON object with the arrays 'images', 'annotations' "
              "and 'categories'")
FIX_FILE = 'fix the annotation file'


def _json_kind(value) -> str:
    """The JSON name of a parsed value's type (for messages)."""
    kinds = {dict: 'object', list: 'array', str: 'string', bool: 'boolean', type(None): 'null'}
    return kinds.get(type(value), 'number')


def _name(err: BaseException) -> str:
    """An exception's class name, with its module unless builtin (``cv2.error``)."""
    cls = type(err)
    if cls.__module__ == 'builtins':
        return cls.__qualname__
    return f'{cls.__module__}.{cls.__qualname__}'


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def load_coco_json(path: str) -> dict:
    """Read a COCO detection annotation file and check its structure (:func:`check_coco`).

    Raises:
        DatasetConfigError: The file is empty, not UTF-8 text, not valid JSON, or not a COCO
            detection file.
    """
    with open(path, 'rb') as f:
        raw = f.read()
    if not raw:
        raise DatasetConfigError(
            f'{path}: the annotation file is empty (0 bytes); {COCO_SHAPE}: regenerate or '
            're-download it')
    try:
        data = json.loads(raw)
    except UnicodeDecodeError as e:
        raise DatasetConfigError(
            f'{path}: not a JSON text file (byte {raw[e.start:e.start + 1]!r} at offset '
            f'{e.start} is not UTF-8; the file starts with {raw[:8]!r}); point ann_file at the '
            'COCO .json annotation file') from e
    except json.JSONDecodeError as e:
        raise DatasetConfigError(
            f'{path}: not valid JSON ({e}; the file has {len(raw)} bytes): it is truncated or '
            'corrupt, regenerate or re-download it') from e
    del raw
    check_coco(data, path)
    return data


def check_coco(data, path: str) -> None:
    """Check that parsed JSON is a COCO detection file mmdet can use, as far as mmdet reads it.

    The top level is an object with arrays ``images`` (at least one) and ``categories``
    (``annotations`` may be absent: an unlabelled test set); every entry is an object with the
    :data:`REQUIRED_FIELDS`; ids are unique; images have a ``file_name`` and a positive size;
    every annotation's ``image_id`` and ``category_id`` exist (mmdet would silently drop the
    annotation otherwise). Boxes are checked later, per image, by :class:`CheckedCocoDataset`.

    Raises:
        DatasetConfigError: naming ``path``, the field and the value.
    """
    if not isinstance(data, dict):
        raise DatasetConfigError(
            f'{path}: the top level is a JSON {_json_kind(data)} ({short(data, 40)}), not an '
            f'object; {COCO_SHAPE}: point ann_file at a COCO detection (instances) json')
    for key in ('images', 'categories'):
        if key not in data:
            raise DatasetConfigError(
                f'{path}: field {key!r} is missing (top-level fields: {short(sorted(data), 60)});'
                f' {COCO_SHAPE}: point ann_file at a COCO detection (instances) json')
    for key in REQUIRED_FIELDS:
        if key in data and not isinstance(data[key], list):
            raise DatasetConfigError(
                f'{path}: field {key!r} is a JSON {_json_kind(data[key])} '
                f'({short(data[key], 40)}), expected an array; {COCO_SHAPE}: {FIX_FILE} or point '
                'ann_file at a COCO detection (instances) json')
    if not data['images']:
        raise DatasetConfigError(
            f"{path}: field 'images' is an empty array (0 images), there is nothing to train or "
            'evaluate on; point ann_file at an annotation file that lists images')
    ids = {key: _check_entries(data.get(key, []), key, path) for key in REQUIRED_FIELDS}
    for i, img in enumerate(data['images']):
        where = f"{path}: images[{i}] (id={img['id']!r})"
        name = img['file_name']
        if not (isinstance(name, str) and name):
            raise DatasetConfigError(
                f"{where} has file_name={short(name)}, expected the image's path relative to "
                f'data_prefix.img; {FIX_FILE}')
        for field in ('width', 'height'):
            if not (_is_number(img[field]) and img[field] > 0):
                raise DatasetConfigError(
                    f'{where} file_name={name!r} has {field}={short(img[field])}, expected the '
                    f"image's {field} in pixels (a positive number); {FIX_FILE}")
    anns = data.get('annotations', [])
    _check_references(anns, 'image_id', ids['images'], 'images', path)
    _check_references(anns, 'category_id', ids['categories'], 'categories', path)


def _check_entries(entries: list, key: str, path: str) -> dict:
    """Check the entries of ``data[key]``: objects with the required fields and unique ids.

    Returns:
        dict: Each id -> the index of its entry.
    """
    need = REQUIRED_FIELDS[key]
    need_set = frozenset(need)
    seen = {}
    for i, entry in enumerate(entries):
        if not (isinstance(entry, dict) and need_set <= entry.keys()):
            if not isinstance(entry, dict):
                raise DatasetConfigError(
                    f'{path}: {key}[{i}] is a JSON {_json_kind(entry)} ({short(entry, 40)}), '
                    f'expected an object with the fields {list(need)}; {FIX_FILE}')
            missing = [field for field in need if field not in entry]
            raise DatasetConfigError(
                f"{path}: {key}[{i}] (id={short(entry.get('id'), 30)}) has no field "
                f'{missing[0]!r} (its fields: {short(sorted(entry), 80)}); every entry of '
                f'{key!r} needs {list(need)}: {FIX_FILE}')
        id_ = entry['id']
        if not isinstance(id_, (int, str)) or isinstance(id_, bool):
            raise DatasetConfigError(
                f'{path}: {key}[{i}] has id={short(id_)}, expected an integer; {FIX_FILE}')
        if id_ in seen:
            raise DatasetConfigError(
                f'{path}: {key}[{i}] repeats id={id_!r} of {key}[{seen[id_]}]; ids must be '
                f'unique within {key!r}: {FIX_FILE} (renumber them)')
        seen[id_] = i
    return seen


def _check_references(anns: list, field: str, known: dict, target: str, path: str) -> None:
    """Every annotation's ``field`` (``image_id``/``category_id``) is an id of ``target``."""
    first, count = None, 0
    for i, ann in enumerate(anns):
        try:
            ok = ann[field] in known
        except TypeError:  # an unhashable value, e.g. a list
            ok = False
        if not ok:
            count += 1
            first = i if first is None else first
    if count:
        ann = anns[first]
        more = f', and so do {count - 1} more annotations' if count > 1 else ''
        raise DatasetConfigError(
            f"{path}: annotations[{first}] (id={ann['id']!r}) has {field}={short(ann[field])}, "
            f'which is not an id in {target!r} ({len(known)} ids, e.g. '
            f'{short(list(known)[:5], 60)}){more}; mmdet would silently drop such annotations: '
            f'fix {field} or add the missing entry to {target!r}')


class CheckedCOCO(COCO):
    """mmdet's COCO API reading a checked annotation file (:func:`load_coco_json`)."""

    def __init__(self, annotation_file: str | None = None):
        super().__init__(None)
        if annotation_file is not None:
            self.dataset = load_coco_json(annotation_file)
            self.createIndex()
            # the aliases mmdet's COCO.__init__ sets after indexing a file
            self.img_ann_map = self.imgToAnns
            self.cat_img_map = self.catToImgs


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """:class:`mmdet.datasets.CocoDataset` with validation of files, classes, boxes and images.

    When the dataset is built: ``data_root``, the annotation file (a file, not empty, JSON, a COCO
    detection file: :func:`check_coco`), the image folder, every listed image file, the class
    names and every box. When a sample is loaded: if the pipeline raises, or returns ``None``
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
