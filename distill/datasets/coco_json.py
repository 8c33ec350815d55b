"""Reading a COCO detection annotation file with checks of its structure and ids.

pycocotools and mmdet accept a file that is empty, binary, not an object, misses fields, repeats
ids or refers to images and categories that do not exist (mmdet silently drops those
annotations); :func:`load_coco_json` refuses each with a one-line :class:`DatasetConfigError`
naming the file, the field and the value. :class:`CheckedCOCO` is mmdet's COCO API on top of it.
"""

from __future__ import annotations

import json
import math

from mmdet.datasets.api_wrappers import COCO

from .errors import DatasetConfigError, short

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
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except OSError as e:
        raise DatasetConfigError(f'{path}: the annotation file cannot be read '
                                 f'({type(e).__name__}: {e.strerror or e})') from e
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
    except (json.JSONDecodeError, RecursionError) as e:  # (nesting too deep for the parser)
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
