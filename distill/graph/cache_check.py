"""Which train pipelines and batch augmentations the teacher-output cache accepts.

The cache may only serve a record when the teacher's input is the same tensor each time its key
comes up. A transform that draws random numbers breaks that, unless the key holds the draw:
``RandomFlip`` (its ``flip`` and ``flip_direction`` are in the image key) and ``RandomResize`` /
``RandomChoiceResize`` (its ``img_shape`` and ``scale_factor``) are *keyed*: each flip and scale
of an image is its own record (:data:`KEYED_RANDOM`). Every other random transform is refused.

A transform is looked up by its type in mmdet's ``TRANSFORMS`` registry (mmcv's and mmengine's
through it) and is random when its class, or a class it derives from, is named in
:data:`RANDOM_NAMES` or has ``Random`` in its name (``RandomChoice``, ``RandomApply`` and
mmdet's ``AutoAugment`` / ``RandAugment`` built on them, ``RandomCrop``, ``YOLOXHSVRandomAug``
...). A type the registry does not know is refused too: whether it is random cannot be told.
Nested pipelines are walked under any key (``RandomChoice(transforms=[[...], [...]])``,
``KeyMapper``, ``TransformBroadcaster``, ``MultiBranch(sup=[...])``).

Batch augmentations run in the data preprocessor, after the pipeline: those of the algorithm's
(``model.data_preprocessor``) and of the student's (``model.architecture.data_preprocessor``,
which mmrazor uses when the algorithm has none, as with every ``train_distill.py`` run) are
checked, in the config and in the built model; only :data:`DETERMINISTIC_BATCH_AUGMENTS` pass.
"""

from __future__ import annotations

import functools
import types

from distill.graph.cache_key import TeacherCacheError

#: Callables a pipeline may hold whose randomness cannot be told (refused as unknown).
_OPAQUE = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, functools.partial)

#: mmdet 3.3 / mmcv 2.x transforms that draw random numbers, by class name (a subclass counts
#: too; any class with ``random`` in its name counts without being listed). From the sources:
#: ``Corrupt`` (imagecorruptions' noise), ``Albu`` (albumentations' ``p``), the colour and
#: geometric auto-augment families (``ColorTransform``, ``GeomTransform``: a random ``prob``,
#: level and sign), the frame samplers of the video datasets.
RANDOM_NAMES = frozenset({
    'Albu', 'AutoAugment', 'BaseFrameSample', 'CachedMixUp', 'CachedMosaic', 'ColorTransform',
    'CopyPaste', 'Corrupt', 'CutOut', 'Expand', 'GeomTransform', 'InstaBoost',
    'MinIoURandomCrop', 'MixUp', 'Mosaic', 'PhotoMetricDistortion', 'RandAugment',
    'TrivialAugmentWide', 'YOLOXHSVRandomAug'})
#: Random transforms whose draw the image key holds, with the metainfo fields that hold it.
KEYED_RANDOM = {'RandomFlip': ('flip', 'flip_direction'),
                'RandomResize': ('img_shape', 'scale_factor'),
                'RandomChoiceResize': ('img_shape', 'scale_factor')}
#: Batch augmentations (mmdet's data preprocessors) that draw no random numbers.
DETERMINISTIC_BATCH_AUGMENTS = frozenset({'BatchFixedSizePad', 'BatchResize'})
PREPROCESSOR_FIELDS = ('model.data_preprocessor', 'model.architecture.data_preprocessor')


def _registry_class(t, registry: str):
    """The class of a transform (or batch augmentation) config, type or object; None if the
    registry does not know its type."""
    from mmdet.registry import MODELS, TRANSFORMS
    t = t.get('type') if isinstance(t, dict) else t
    if isinstance(t, str):
        return (TRANSFORMS if registry == 'transform' else MODELS).get(t)
    if isinstance(t, _OPAQUE) or t is None:
        return None
    return t if isinstance(t, type) else type(t)


def _is_random(cls) -> bool:
    return any(c.__name__ in RANDOM_NAMES or 'random' in c.__name__.lower()
               for c in cls.__mro__)


def _keyed(cls, t) -> tuple[str, ...] | None:
    """The metainfo fields holding a keyed random transform's draw (``()`` for a
    ``RandomFlip`` that never flips); None for any other transform."""
    if cls.__name__ not in KEYED_RANDOM or not cls.__module__.startswith(('mmdet.', 'mmcv.')):
        return None
    prob = t.get('prob') if isinstance(t, dict) else getattr(t, 'prob', 1)
    if cls.__name__ == 'RandomFlip' and not (sum(prob) if isinstance(prob, (list, tuple))
                                             else prob):
        return ()
    return KEYED_RANDOM[cls.__name__]


def scan_pipeline(pipeline, keyed: bool = True, prefix: str = '') -> tuple[list[str], set]:
    """The refused transforms of a pipeline and the metainfo fields its keyed ones need.

    Args:
        pipeline (list): Transform configs (or types, or transform objects).
        keyed (bool): Accept the :data:`KEYED_RANDOM` transforms (their draw is in the key).
        prefix (str): Index path of ``pipeline`` in the outer one (for the names).

    Returns:
        tuple: ``'<index path>: <type>'`` of each refused transform (random, or unknown to
        the registry), and the set of metainfo fields the keyed ones need.
    """
    refused, needs = [], set()
    for i, t in enumerate(pipeline or []):
        where = f'{prefix}{i}'
        if isinstance(t, (list, tuple)):  # a nested pipeline (RandomChoice's choices)
            r, n = scan_pipeline(t, keyed, f'{where}.')
            refused, needs = refused + r, needs | n
            continue
        raw = t.get('type') if isinstance(t, dict) else t
        name = raw if isinstance(raw, str) else getattr(raw, '__name__', type(raw).__name__)
        cls = _registry_class(t, 'transform')
        if cls is None:
            refused.append(f'{where}: {name} (unknown to mmdet\'s TRANSFORMS registry)')
            continue
        fields = _keyed(cls, t)
        if fields is not None and (keyed or not fields):
            needs |= set(fields)
        elif _is_random(cls):
            refused.append(f'{where}: {name.split(".")[-1]}')
            continue
        if isinstance(t, dict):  # nested pipelines, under any key
            for key, value in t.items():
                if isinstance(value, dict) and 'type' in value:
                    value = [value]
                if key != 'type' and isinstance(value, (list, tuple)) and any(
                        isinstance(v, (dict, list, tuple)) for v in value):
                    r, n = scan_pipeline(value, keyed, f'{where}.{key}.')
                    refused, needs = refused + r, needs | n
    return refused, needs


def random_transforms(pipeline, keyed: bool = True) -> list[str]:
    """The refused transforms of a pipeline, as ``'<index path>: <type>'`` (nested ones too;
    see :func:`scan_pipeline`)."""
    return scan_pipeline(pipeline, keyed)[0]


def dataset_pipelines(dataset, where: str = 'train_dataloader.dataset') -> list[tuple]:
    """``(config field, pipeline)`` of every pipeline of a dataset config, wrappers
    (Repeat, Concat, ClassBalanced, MultiImageMix) included."""
    if not isinstance(dataset, dict):
        return []
    out = [(f'{where}.pipeline', dataset['pipeline'])] if dataset.get('pipeline') is not None \
        else []
    out += dataset_pipelines(dataset.get('dataset'), f'{where}.dataset')
    for i, d in enumerate(dataset.get('datasets') or []):
        out += dataset_pipelines(d, f'{where}.datasets.{i}')
    return out


def _find_batch_augments(cfg, where: str) -> list[tuple[str, list]]:
    """``(field, batch_augments)`` found anywhere under a preprocessor config."""
    if not isinstance(cfg, dict):
        return []
    out = [(f'{where}.batch_augments', cfg['batch_augments'])] if cfg.get('batch_augments') \
        else []
    for key, value in cfg.items():
        if key != 'batch_augments' and isinstance(value, dict):
            out += _find_batch_augments(value, f'{where}.{key}')
    return out


def _check_augments(augments, field: str, source: str) -> None:
    bad = []
    for a in augments:
        cls = _registry_class(a, 'model')
        if cls is None or cls.__name__ not in DETERMINISTIC_BATCH_AUGMENTS:
            raw = a.get('type') if isinstance(a, dict) else a
            bad.append(raw if isinstance(raw, str) else getattr(cls, '__name__', str(raw)))
    if bad:
        raise TeacherCacheError(
            f'{source}: the teacher-output cache needs a deterministic input, but {field} has '
            f'the random (or unknown) batch augmentation(s) {bad} (only '
            f'{sorted(DETERMINISTIC_BATCH_AUGMENTS)} are accepted): drop them, or run '
            f'without --teacher-cache')


def check_deterministic(cfg, source: str, keyed: bool = True) -> None:
    """Refuse a config whose train pipeline or batch augmentation changes the teacher's input.

    Args:
        cfg (Config): The run's config (a ``DistillGraph`` model, or a plain detector).
        source (str): How errors name the config (its file).
        keyed (bool): Accept the :data:`KEYED_RANDOM` transforms.

    Raises:
        TeacherCacheError: naming the config field and the transforms.
    """
    dataset = (cfg.get('train_dataloader') or {}).get('dataset')
    for field, pipeline in dataset_pipelines(dataset):
        found = random_transforms(pipeline, keyed)
        if found:
            raise TeacherCacheError(
                f'{source}: the teacher-output cache needs a deterministic train pipeline, but '
                f'{field} has the random transform(s) {found}: the teacher would see another '
                f'input each epoch. Run without --teacher-cache, or drop the transform')
    model = cfg.get('model') or {}
    for field, pre in zip(PREPROCESSOR_FIELDS, (model.get('data_preprocessor'),
                                                (model.get('architecture') or {}).get(
                                                    'data_preprocessor'))):
        for where, augments in _find_batch_augments(pre, field):
            _check_augments(augments, where, source)


def check_preprocessors(graph, source: str) -> None:
    """Refuse random batch augmentations in a built graph's data preprocessors (the
    algorithm's and the student's), whatever the config said.

    Raises:
        TeacherCacheError: naming the preprocessor and the augmentations.
    """
    owners = (getattr(graph, 'architecture', None), graph)  # the student's first: mmrazor's
    for field, owner in zip(PREPROCESSOR_FIELDS[::-1], owners):  # default for the graph's
        pre = getattr(owner, 'data_preprocessor', None)
        if pre is None:
            continue
        for name, module in pre.named_modules():
            augments = getattr(module, 'batch_augments', None)
            if augments:
                where = '.'.join(filter(None, (field, name, 'batch_augments')))
                _check_augments(list(augments), where, source)
