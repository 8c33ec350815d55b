"""Shared pieces of the command-line tools: config loading and checks, schedules, AP tables,
and the entry point that prints our own errors as one last line."""

from __future__ import annotations

import difflib
import math
import os
import sys
import warnings

from mmengine.config import Config, DictAction

from distill.checkpoint import CheckpointError, check_checkpoint  # noqa: F401  (re-exported)
from distill.config_files import base_dataset_cfg, read_config  # noqa: F401  (re-exported)
from distill.errors import ConfigError, DistillError, one_line
from distill.paths import resolve_config

COCO_KEYS = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l')
COCO_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')

#: The top-level keys mmengine's ``Runner.from_cfg`` reads; any other top-level key of a config
#: file is a variable used only while the file is parsed (overriding it changes nothing).
RUNNER_KEYS = frozenset((
    'model', 'work_dir', 'train_dataloader', 'val_dataloader', 'test_dataloader', 'train_cfg',
    'val_cfg', 'test_cfg', 'auto_scale_lr', 'optim_wrapper', 'param_scheduler', 'val_evaluator',
    'test_evaluator', 'default_hooks', 'custom_hooks', 'data_preprocessor', 'load_from',
    'resume', 'launcher', 'env_cfg', 'log_processor', 'log_level', 'visualizer',
    'default_scope', 'randomness', 'experiment_name',
    # read by the Runner through self.cfg (DDP wrapper, torch.compile, SyncBN, ...)
    'model_wrapper_cfg', 'find_unused_parameters', 'sync_bn', 'compile',
    'activation_checkpointing', 'efficient_conv_bn_eval', 'tta_model', 'tta_pipeline'))


class ConfigCheckError(ConfigError):
    """A config is inconsistent; the message names the file, the fields and their values."""


def cli(main):
    """Wrap a tool's ``main(argv)`` for the command line: our errors end the output.

    A :class:`~distill.errors.DistillError` (bad config, checkpoint, dataset, recipe, resume) is
    printed as the last line, ``error: <what, file, field, value, what to do>``, without a
    traceback, and the exit status is 2. ``DISTILL_DEBUG=1`` re-raises it with its traceback.
    Other exceptions keep their traceback: they are bugs.
    """
    def entry(argv=None) -> int:
        # 0, not main's return value: console scripts call sys.exit(entry()), which would
        # print a returned object (a Runner, a table) and exit with status 1.
        try:
            main(argv)
            return 0
        except DistillError as e:
            if os.environ.get('DISTILL_DEBUG'):
                raise
            sys.stdout.flush()
            print(f'error: {one_line(e)}', file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    entry.__doc__ = main.__doc__
    entry.__wrapped__ = main
    return entry


def add_cfg_options(parser) -> None:
    """The ``--cfg-options`` argument, as in mmdet's tools."""
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, xxx=yyy (e.g. model.bbox_head.num_classes=3 '
        "'train_dataloader.batch_size=4'); a key that exists nowhere in the config is an "
        'error. To change the number of epochs use --epochs (it also scales the lr milestones)')


def add_epochs_option(parser) -> None:
    """``--epochs N``: the one documented way to change the length of the schedule."""
    parser.add_argument(
        '--epochs', type=int, metavar='N',
        help='train for N epochs: sets train_cfg.max_epochs and scales the epoch-based lr '
        'milestones (and scheduler ends) by N / max_epochs, as compare.py does')


def _leaf_paths(node, prefix: str = ''):
    """Every dotted key path of a config tree (list items by index)."""
    if isinstance(node, dict):
        for k, v in node.items():
            path = f'{prefix}.{k}' if prefix else str(k)
            yield path
            yield from _leaf_paths(v, path)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _leaf_paths(v, f'{prefix}.{i}')


def _nearest(key: str, cfg: Config, candidates) -> list[str]:
    """Existing key paths that look like ``key``: same last name, or close spellings."""
    name = key.rsplit('.', 1)[-1]
    paths = [p for p in _leaf_paths(cfg._cfg_dict) if p.split('.')[0] in RUNNER_KEYS]
    same = [p for p in paths if p.rsplit('.', 1)[-1] == name and p != key]
    close = difflib.get_close_matches(key, paths, n=3, cutoff=0.75)
    near = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return list(dict.fromkeys(same[:3] + close + near))[:5]


def check_cfg_options(cfg: Config, options: dict, path: str) -> None:
    """Refuse ``--cfg-options`` keys that would be silently ignored or are misspelt.

    A top-level key must be one the Runner reads (or ``distill``): a file variable such as
    ``max_epochs`` is consumed while the file is parsed, so overriding it changes nothing. A
    nested key may be new (e.g. ``train_dataloader.dataset.indices``, a dataset argument the
    file does not set) unless it is a near-miss of an existing sibling (``max_epoch`` next to
    ``max_epochs``) or its parent is not a dict; a list index must exist.

    Raises:
        ConfigError: naming the key, the config file and the nearest existing keys.
    """
    for key in options:
        parts = key.split('.')
        top = parts[0]
        if top not in RUNNER_KEYS | {'distill'}:
            near = _nearest(key, cfg, [k for k in cfg.keys() if k in RUNNER_KEYS])
            what = ('is a variable of the config file, read only while the file is parsed: '
                    'overriding it changes nothing' if top in cfg else
                    'exists nowhere in the config')
            hint = ' (to change the number of epochs use --epochs N)' if 'epoch' in key else ''
            raise ConfigError(f'--cfg-options {key}: {top!r} {what} ({path}); nearest existing '
                              f'keys: {near or "none"}{hint}')
        node = cfg._cfg_dict
        for depth, part in enumerate(parts):
            here = '.'.join(parts[:depth + 1])
            if isinstance(node, (list, tuple)):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f'--cfg-options {key}: {".".join(parts[:depth])} is a list '
                                      f'of {len(node)} items in {path}; {part!r} is not an index '
                                      f'of it')
                node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f'--cfg-options {key}: {".".join(parts[:depth])} is '
                                  f'{node!r} in {path}, not a dict with keys')
            if part in node:
                node = node[part]
                continue
            close = difflib.get_close_matches(part, [str(k) for k in node], n=3, cutoff=0.8)
            if close or depth < len(parts) - 1:
                near = [f'{".".join(parts[:depth] + [c])}' for c in close] or \
                    _nearest(here, cfg, [str(k) for k in node])
                raise ConfigError(f'--cfg-options {key}: {here!r} does not exist in {path}; '
                                  f'nearest existing keys: {near or "none"}')
            break  # a new leaf key: an argument the file does not set


def scaled_schedule(cfg: Config, epochs: int) -> dict:
    """``--cfg-options`` that change ``cfg``'s schedule to ``epochs`` epochs.

    ``train_cfg.max_epochs`` becomes ``epochs``; the milestones of every epoch-based scheduler
    are scaled by ``epochs / max_epochs`` (rounded down, at least 1), and so are its other epoch
    counts (``begin``, ``end``, ``T_max``, ``step_size``, ``total_iters``; ``max_epochs`` or more
    becomes ``epochs``). ``val_interval`` stays: mmengine always evaluates the last epoch.
    """
    if epochs < 1:
        raise ConfigError(f'--epochs {epochs}: must be at least 1')
    old = cfg.train_cfg.get('max_epochs')
    if old is None:
        raise ConfigError(f'--epochs: {cfg.filename} has no train_cfg.max_epochs (an '
                          f'iteration-based schedule?); set train_cfg.max_iters instead')
    options = {'train_cfg.max_epochs': epochs}
    for i, sched in enumerate(cfg.get('param_scheduler') or []):
        if not sched.get('by_epoch', True):
            continue
        if 'milestones' in sched:
            options[f'param_scheduler.{i}.milestones'] = [max(1, m * epochs // old)
                                                         for m in sched.milestones]
        # every other epoch count of the scheduler scales the same way (a cosine's T_max, ...)
        for key in ('begin', 'end', 'T_max', 'step_size', 'total_iters'):
            value = sched.get(key)
            if isinstance(value, int) and value > 0:
                options[f'param_scheduler.{i}.{key}'] = (epochs if value >= old else
                                                         max(1, value * epochs // old))
    return options


def warn_unscaled_milestones(cfg: Config, path: str) -> None:
    """Warn when an epoch-based lr milestone lies at or past ``max_epochs`` (it never fires)."""
    max_epochs = (cfg.get('train_cfg') or {}).get('max_epochs')
    if max_epochs is None:
        return
    for i, sched in enumerate(cfg.get('param_scheduler') or []):
        late = [m for m in sched.get('milestones', []) if m >= max_epochs]
        if sched.get('by_epoch', True) and late:
            from mmengine.logging import print_log
            print_log(f'{path}: param_scheduler[{i}].milestones={list(sched.milestones)} '
                      f'has {late} at or past train_cfg.max_epochs={max_epochs}: the learning '
                      f'rate will not decay there. To shorten a schedule use --epochs N, which '
                      f'scales the milestones.', logger='current', level=30)


def load_config(path: str, cfg_options: dict | None = None, work_dir: str | None = None,
                epochs: int | None = None) -> Config:
    """Load and check a config; ``work_dir`` defaults to ``work_dirs/<config name>``.

    Args:
        path (str): Config file, or a path inside the package's ``configs/``.
        cfg_options (dict, optional): ``--cfg-options`` (checked by :func:`check_cfg_options`).
        work_dir (str, optional): Where the run writes.
        epochs (int, optional): ``--epochs``: the schedule scaled by :func:`scaled_schedule`
            before ``cfg_options`` are applied.
    """
    path = resolve_config(path)
    cfg = read_config(path)
    if epochs is not None:
        cfg.merge_from_dict(scaled_schedule(cfg, epochs))
    if cfg_options:
        check_cfg_options(cfg, cfg_options, path)
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = os.path.join('work_dirs', os.path.splitext(os.path.basename(path))[0])
    check_config(cfg, path)
    if epochs is None:  # --epochs scaled them (a 1-epoch schedule cannot decay at all)
        warn_unscaled_milestones(cfg, path)
    return cfg


def build_plain_dataset(cfg: Config, split: str):
    """The ``split`` ('train' or 'val') dataset of ``cfg`` without random augmentation.

    For tools that look at fixed images (drawing regions, measuring boxes): wrappers such as
    ``RepeatDataset`` are removed and so are the pipeline's ``Random*`` transforms, so the
    result does not depend on a flip.
    """
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    init_default_scope('mmdet')
    loader = cfg.val_dataloader if split == 'val' else cfg.train_dataloader
    ds_cfg = base_dataset_cfg(loader.dataset).copy()
    ds_cfg.pipeline = [t for t in ds_cfg.pipeline if 'Random' not in t['type']]
    return DATASETS.build(ds_cfg)


def _dataset_classes(dataset_cfg) -> tuple | None:
    """Classes of a dataloader's dataset config (embedded datasets know theirs)."""
    dataset_cfg = base_dataset_cfg(dataset_cfg)
    meta = dataset_cfg.get('metainfo') or {}
    if meta.get('classes') is not None:
        return tuple(meta['classes'])
    if dataset_cfg.get('type') == 'EmbeddedCocoDataset':
        from distill.datasets import embedded_info
        return embedded_info(dataset_cfg['name']).classes
    return None


def check_loaders(cfg: Config, path: str) -> None:
    """Refuse dataloader settings torch's ``DataLoader`` cannot run (it would raise a raw
    ``ValueError`` once the run is built): ``batch_size`` a whole number >= 1, ``num_workers``
    a whole number >= 0, ``persistent_workers`` and ``prefetch_factor`` only with workers."""
    def whole(v):
        return isinstance(v, int) and not isinstance(v, bool)

    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        spec = cfg.get(loader)
        if not isinstance(spec, dict):
            continue
        batch, workers = spec.get('batch_size', 1), spec.get('num_workers', 0)
        if not whole(batch) or batch < 1:
            raise ConfigCheckError(f'{path}: {loader}.batch_size={batch!r} must be a whole '
                                   f'number >= 1 (images per GPU)')
        if not whole(workers) or workers < 0:
            raise ConfigCheckError(f'{path}: {loader}.num_workers={workers!r} must be a whole '
                                   f'number >= 0 (0: load in the main process)')
        for key in ('persistent_workers', 'prefetch_factor'):
            if workers == 0 and spec.get(key) not in (None, False):
                raise ConfigCheckError(f'{path}: {loader}.{key}={spec.get(key)!r} needs '
                                       f'{loader}.num_workers > 0 (it is 0): set '
                                       f'{loader}.{key}={"False" if key[0] == "p" else "None"} '
                                       f'or give workers')


def check_config(cfg: Config, path: str) -> None:
    """Catch the config mistakes that otherwise fail late or silently.

    Checks the dataloaders (:func:`check_loaders`) and that the head's ``num_classes`` equals
    the number of classes of every dataloader's dataset; mmdet would otherwise train a head
    whose extra outputs are never positive (or crash on the first label index past the end).
    """
    check_loaders(cfg, path)
    for field, num_classes in _class_counts(cfg.model):
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            if cfg.get(loader) is None:
                continue
            classes = _dataset_classes(cfg[loader].dataset)
            if classes is not None and len(classes) != num_classes:
                raise ConfigCheckError(
                    f'{path}: {field}={num_classes} but {loader}.dataset has {len(classes)} '
                    f'classes {classes}: set {field}={len(classes)} or the dataset\'s '
                    f'metainfo.classes')


def _class_counts(model) -> list[tuple[str, int]]:
    """``(field, num_classes)`` of the model's class heads: a dense ``bbox_head``, a two-stage
    detector's ``roi_head.bbox_head`` (a list of them in a cascade); not the RPN's (1 class)."""
    found = []
    head = model.get('bbox_head') or {}
    if head.get('num_classes') is not None:
        found.append(('model.bbox_head.num_classes', head['num_classes']))
    roi = (model.get('roi_head') or {}).get('bbox_head')
    stages = roi if isinstance(roi, (list, tuple)) else [roi]
    for i, stage in enumerate(stages):
        if stage and stage.get('num_classes') is not None:
            index = f'[{i}]' if isinstance(roi, (list, tuple)) else ''
            found.append((f'model.roi_head.bbox_head{index}.num_classes', stage['num_classes']))
    return found


def coco_row(metrics: dict, prefix: str = 'coco/') -> dict:
    """``{'AP': .., 'AP50': .., ...}`` (percent) from mmdet CocoMetric results.

    pycocotools reports -1 for a size range without any ground truth; that becomes NaN (shown
    as ``n/a``), not -100 %. mmdet's CocoMetric returns no keys at all when the model made no
    detection above ``score_thr``; that is an AP of 0 (a warning says so).
    """
    if not any(prefix + key in metrics for key in COCO_KEYS):
        warnings.warn('no COCO metrics: the model made no detection above test_cfg.score_thr '
                      'on the whole evaluation set; reporting AP = 0')
        metrics = {prefix + key: 0.0 for key in COCO_KEYS}
    row = {}
    for name, key in zip(COCO_NAMES, COCO_KEYS):
        value = float(metrics[prefix + key])
        row[name] = 100.0 * value if value >= 0 else float('nan')
    return row


def json_safe(obj):
    """``obj`` with every non-finite float replaced by None (strict JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def format_coco_table(rows: dict[str, dict]) -> str:
    """A Markdown table with one row per named result of :func:`coco_row`."""
    width = max([len('model')] + [len(k) for k in rows])
    head = f"| {'model':<{width}} | " + ' | '.join(f'{n:>5}' for n in COCO_NAMES) + ' |'
    sep = '|' + '-' * (width + 2) + '|' + '|'.join('-' * 7 for _ in COCO_NAMES) + '|'
    lines = [head, sep]
    for name, row in rows.items():
        cells = ('  n/a' if math.isnan(row[n]) else f'{row[n]:5.1f}' for n in COCO_NAMES)
        lines.append(f'| {name:<{width}} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
