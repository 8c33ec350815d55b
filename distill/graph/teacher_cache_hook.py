"""``TeacherCacheHook``: switches a run's teacher-output cache on (see :mod:`.teacher_cache`).

Add it to a run with ``tools/train_distill.py --teacher-cache`` (``tools/compare.py`` and
``make demo`` do by default where the pipeline allows), or in a config::

    custom_hooks = [dict(type='TeacherCacheHook', memory_mb=4096, disk_mb=16384, fp16=False)]

It refuses a train pipeline with a random transform (:func:`random_transforms`): the teacher
would then see another input at every epoch, and a cache could only return stale outputs.
"""

from __future__ import annotations

import hashlib
import json
import os.path as osp

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from distill.datasets.cache import cache_root
from distill.graph.teacher_cache import (
    TeacherCache,
    TeacherCacheError,
    teacher_key,
    tree_digest,
)

#: Transforms that draw random numbers (mmcv / mmdet 3.x); any type whose name holds
#: ``Random`` counts too. ``RandomFlip`` with ``prob`` 0 or None never flips and is allowed.
RANDOM_TYPES = frozenset({
    'PhotoMetricDistortion', 'Expand', 'MinIoURandomCrop', 'Mosaic', 'MixUp', 'CachedMosaic',
    'CachedMixUp', 'CopyPaste', 'CutOut', 'Albu', 'YOLOXHSVRandomAug', 'RandAugment',
    'AutoAugment', 'TrivialAugmentWide', 'ColorTransform', 'Brightness', 'Contrast',
    'Sharpness', 'Color', 'Equalize', 'AutoContrast', 'Invert', 'Posterize', 'Solarize',
    'SolarizeAdd', 'Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'GeomTransform',
    'RandomChoice', 'RandomApply', 'RandomOrder'})


def _type_name(t) -> str:
    t = t.get('type') if isinstance(t, dict) else t
    return t if isinstance(t, str) else getattr(t, '__name__', str(t))


def random_transforms(pipeline) -> list[str]:
    """The random transforms of a pipeline, as ``'<index>: <type>'`` (nested ones too)."""
    found = []
    for i, t in enumerate(pipeline or []):
        name = _type_name(t).split('.')[-1]
        if name == 'RandomFlip' and not (t.get('prob') if isinstance(t, dict) else 1):
            continue
        if name in RANDOM_TYPES or 'random' in name.lower():
            found.append(f'{i}: {name}')
        elif isinstance(t, dict) and isinstance(t.get('transforms'), (list, tuple)):
            found += [f'{i}.{x}' for x in random_transforms(t['transforms'])]
    return found


def dataset_pipelines(dataset) -> list:
    """Every ``pipeline`` of a dataset config, wrappers (Repeat, Concat, MultiImageMix) too."""
    if not isinstance(dataset, dict):
        return []
    out = [dataset['pipeline']] if dataset.get('pipeline') is not None else []
    out += dataset_pipelines(dataset.get('dataset'))
    for d in dataset.get('datasets') or []:
        out += dataset_pipelines(d)
    return out


def check_deterministic(cfg, source: str) -> None:
    """Refuse a train pipeline or batch augmentation that changes the teacher's input."""
    dataset = (cfg.get('train_dataloader') or {}).get('dataset')
    for pipeline in dataset_pipelines(dataset):
        found = random_transforms(pipeline)
        if found:
            raise TeacherCacheError(
                f'{source}: the teacher-output cache needs a deterministic train pipeline, but '
                f'train_dataloader.dataset.pipeline has the random transform(s) {found}: the '
                f'teacher would see another input each epoch. Run without --teacher-cache, or '
                f'drop the transform')
    augments = ((cfg.get('model') or {}).get('data_preprocessor') or {}).get('batch_augments')
    if augments:
        raise TeacherCacheError(
            f'{source}: the teacher-output cache needs a deterministic input, but '
            f'model.data_preprocessor.batch_augments is {[_type_name(a) for a in augments]}: '
            f'run without --teacher-cache')


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of a model's state dict (a teacher loaded from a URL has no local file): its
    names, and its tensors' shapes, dtypes and bytes."""
    state = model.state_dict()
    return hashlib.sha256(json.dumps(list(state)).encode()
                          + tree_digest(list(state.values())).encode()).hexdigest()


def key_parts(cfg) -> tuple:
    """What besides the checkpoint decides the teacher's input and output: the teacher's
    model config, the train dataset config (its pipelines; image identity is per file), the
    data preprocessor that makes the batch (the graph's, else the student's) and the
    precision the step runs in (AMP or not)."""
    model = cfg.get('model') or {}
    dataset = dict((cfg.get('train_dataloader') or {}).get('dataset') or {})
    dataset.pop('indices', None)  # a subset of the same images reads the same records
    preprocessor = (model.get('data_preprocessor')
                    or (model.get('architecture') or {}).get('data_preprocessor'))
    optim = cfg.get('optim_wrapper') or {}
    precision = dict(type=optim.get('type'), dtype=optim.get('dtype'))
    return model.get('teacher'), dict(dataset=dataset, pipelines=dataset_pipelines(dataset),
                                      precision=precision), preprocessor


@HOOKS.register_module()
class TeacherCacheHook(Hook):
    """Attach a :class:`~distill.graph.teacher_cache.TeacherCache` to the run's graph.

    Args:
        directory (str, optional): On-disk cache root; ``'auto'``:
            ``<dataset cache>/teacher_outputs`` (``$DISTILL_DATA``); None: memory only.
        memory_mb (float): Memory budget per process (MiB); 0: disk only.
        disk_mb (float): Disk budget of the run's cache folder (MiB).
        fp16 (bool): Store the records in float16 (half the size; outputs then differ from an
            uncached run by float16 rounding, see docs/teacher_cache.md).
    """

    priority = 'VERY_HIGH'

    def __init__(self, directory: str | None = 'auto', memory_mb: float = 4096,
                 disk_mb: float = 16384, fp16: bool = False):
        self.directory = (str(cache_root() / 'teacher_outputs') if directory == 'auto'
                          else directory)
        self.memory_mb, self.disk_mb, self.fp16 = memory_mb, disk_mb, fp16
        if memory_mb <= 0 and not self.directory:
            raise TeacherCacheError('TeacherCacheHook: memory_mb=0 and no directory cache '
                                    'nothing: give one of them')

    def before_train(self, runner) -> None:
        graph = runner.model.module if is_model_wrapper(runner.model) else runner.model
        teacher = getattr(graph, 'teacher', None)
        if teacher is None or not getattr(graph, 'edge_cfgs', None):
            print_log('[distill] teacher cache: this run has no teacher; nothing to cache',
                      logger='current')
            return
        check_deterministic(runner.cfg, runner.cfg.filename or 'the run config')
        record = runner.cfg.get('distill') or {}
        ckpt_sha = record.get('teacher_ckpt_sha256') or weights_digest(teacher)
        key = teacher_key(ckpt_sha, *key_parts(runner.cfg), self.fp16)
        # every rank meets other images each epoch (the sampler reshuffles before it splits),
        # so each rank's memory can come to hold the whole dataset: budgeted as such
        num_images = len(runner.train_dataloader.dataset)
        taps = dict(graph.teacher_taps)
        graph.teacher_cache = TeacherCache(key, taps, self.directory, self.memory_mb,
                                           self.disk_mb, self.fp16, num_images)
        where = (osp.join(self.directory, key[:24]) if self.directory else 'memory only')
        print_log(f'[distill] teacher cache: taps {sorted(taps)} of {num_images} images '
                  f'({"float16" if self.fp16 else "native dtype"}), {where}; budgets '
                  f'{self.memory_mb:.0f} MiB memory, {self.disk_mb:.0f} MiB disk',
                  logger='current')

    def after_train_epoch(self, runner) -> None:
        """Log this epoch's cache use (then count the next epoch afresh)."""
        graph = runner.model.module if is_model_wrapper(runner.model) else runner.model
        cache = getattr(graph, 'teacher_cache', None)
        if cache is not None:
            s = cache.stats
            print_log(f'[distill] teacher cache after epoch {runner.epoch + 1}: {s["hits"]} '
                      f'batches from the cache, {s["misses"]} with the teacher run '
                      f'({s["disk_reads"]} files read, {s["rebuilt"]} rebuilt), '
                      f'{cache.memory_bytes / 2**20:.0f} MiB in memory', logger='current')
            cache.stats = dict.fromkeys(s, 0)
