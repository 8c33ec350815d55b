"""``TeacherCacheHook``: switches a run's teacher-output cache on (see :mod:`.teacher_cache`).

Add it to a run with ``tools/train_distill.py --teacher-cache`` (``tools/compare.py`` and
``make demo`` do by default where the pipeline allows), or in a config::

    custom_hooks = [dict(type='TeacherCacheHook', memory_mb=4096, disk_mb=16384, fp16=False)]

It refuses a train pipeline with a random transform, or a random batch augmentation
(:mod:`~distill.graph.cache_check`): the teacher would then see another input at every epoch,
and a cache could only return stale outputs. Flips and random resizes are accepted: each flip
and scale of an image is its own record (its key holds ``flip``, ``flip_direction``,
``img_shape`` and ``scale_factor``). At the start of training it hashes the teacher checkpoint
(:func:`~distill.graph.cache_key.checkpoint_sha256`), tags each sample with the dataset and
pipeline that produced it (:func:`~distill.graph.cache_key.tag_sources`) and keys the cache on
them and on the run's environment (:mod:`~distill.graph.cache_key`).
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
from distill.graph.cache_check import (  # noqa: F401  (re-exported)
    check_deterministic,
    check_preprocessors,
    dataset_pipelines,
    random_transforms,
    scan_pipeline,
)
from distill.graph.cache_key import (
    checkpoint_sha256,
    environment,
    tag_sources,
)
from distill.graph.teacher_cache import (
    TeacherCache,
    TeacherCacheError,
    teacher_key,
    tree_digest,
)


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of a model's state dict (a teacher loaded from a URL has no local file): its
    names, and its tensors' shapes, dtypes and bytes."""
    state = model.state_dict()
    return hashlib.sha256(json.dumps(list(state)).encode()
                          + tree_digest(list(state.values())).encode()).hexdigest()


def teacher_digest(graph, teacher, memo_dir: str | None, record: dict) -> str:
    """The teacher's identity now: its checkpoint file's sha256, hashed when the run starts
    (:func:`~distill.graph.cache_key.checkpoint_sha256`: again only if the file changed), not
    the one the run's config recorded, which a checkpoint replaced in place no longer
    matches; for a teacher loaded from a URL, its loaded weights' (:func:`weights_digest`)."""
    ckpt = getattr(graph, 'teacher_ckpt', None)
    if not (isinstance(ckpt, str) and osp.isfile(ckpt)):
        return weights_digest(teacher)
    sha = checkpoint_sha256(ckpt, memo_dir)
    written = record.get('teacher_ckpt_sha256')
    if written and written != sha:
        print_log(f'[distill] teacher cache: the teacher checkpoint {ckpt} has changed since '
                  f'the run\'s config was written (sha256 {written[:12]}... then, {sha[:12]}... '
                  f'now): the cache is keyed by its content now', logger='current', level=30)
    return sha


def key_parts(cfg) -> tuple:
    """What besides the checkpoint decides the teacher's input and output: the teacher's
    model config, the train dataset config (its pipelines; image identity is per file), the
    data preprocessors that make the batch (the graph's and the student's, which mmrazor
    uses when the graph has none) and the precision the step runs in (AMP or not)."""
    model = cfg.get('model') or {}
    dataset = dict((cfg.get('train_dataloader') or {}).get('dataset') or {})
    dataset.pop('indices', None)  # a subset of the same images reads the same records
    preprocessor = dict(graph=model.get('data_preprocessor'),
                        student=(model.get('architecture') or {}).get('data_preprocessor'))
    optim = cfg.get('optim_wrapper') or {}
    precision = dict(type=optim.get('type'), dtype=optim.get('dtype'))
    pipelines = [p for _, p in dataset_pipelines(dataset)]
    return model.get('teacher'), dict(dataset=dataset, pipelines=pipelines,
                                      precision=precision), preprocessor


def _keyed_fields(pipeline) -> set:
    """The metainfo fields holding a pipeline's flips and scales (its keyed transforms)."""
    return scan_pipeline(pipeline)[1]


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
        source = runner.cfg.filename or 'the run config'
        check_deterministic(runner.cfg, source)
        check_preprocessors(graph, source)  # the built ones, whatever the config said
        ckpt_sha = teacher_digest(graph, teacher, self.directory,
                                  runner.cfg.get('distill') or {})
        key = teacher_key(ckpt_sha, *key_parts(runner.cfg), self.fp16, environment(teacher))
        dataset = runner.train_dataloader.dataset
        sources = tag_sources(runner.cfg.train_dataloader.dataset, dataset, _keyed_fields)
        # every rank meets other images each epoch (the sampler reshuffles before it splits),
        # so each rank's memory can come to hold the whole dataset: budgeted as such
        num_images = len(dataset)
        taps = dict(graph.teacher_taps)
        graph.teacher_cache = TeacherCache(key, taps, self.directory, self.memory_mb,
                                           self.disk_mb, self.fp16, num_images, sources)
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
            totals = getattr(cache, 'totals', None) or dict.fromkeys(s, 0)
            cache.totals = {k: totals.get(k, 0) + v for k, v in s.items()}  # the whole run
            cache.stats = dict.fromkeys(s, 0)
