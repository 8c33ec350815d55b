"""Shared pieces of the command-line tools: config loading and checks, checkpoints, AP tables."""

from __future__ import annotations

import math
import os
import os.path as osp
import warnings

from mmengine.config import Config, DictAction

from distill.checkpoint import CheckpointError, check_checkpoint  # noqa: F401  (re-exported)

COCO_KEYS = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l')
COCO_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')


class ConfigCheckError(ValueError):
    """A config is inconsistent; the message names the file, the fields and their values."""


def add_cfg_options(parser) -> None:
    """The ``--cfg-options`` argument, as in mmdet's tools."""
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, xxx=yyy (e.g. train_cfg.max_epochs=2 '
        "model.bbox_head.num_classes=3 'train_dataloader.batch_size=4')")


def load_config(path: str, cfg_options: dict | None = None, work_dir: str | None = None) -> Config:
    """Load and check a config; ``work_dir`` defaults to ``work_dirs/<config name>``."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {path!r} not found (cwd {os.getcwd()})')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(path))[0])
    check_config(cfg, path)
    return cfg


def base_dataset_cfg(dataset_cfg):
    """The innermost dataset config under wrappers (``RepeatDataset``, ``ClassBalancedDataset``)."""
    while 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg['dataset']
    return dataset_cfg


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


def check_config(cfg: Config, path: str) -> None:
    """Catch the config mistakes that otherwise fail late or silently.

    Checks that the head's ``num_classes`` equals the number of classes of every dataloader's
    dataset; mmdet would otherwise train a head whose extra outputs are never positive (or crash
    on the first label index past the end).
    """
    head = cfg.model.get('bbox_head') or {}
    num_classes = head.get('num_classes')
    if num_classes is None:
        return
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(loader) is None:
            continue
        classes = _dataset_classes(cfg[loader].dataset)
        if classes is not None and len(classes) != num_classes:
            raise ConfigCheckError(
                f'{path}: model.bbox_head.num_classes={num_classes} but '
                f'{loader}.dataset has {len(classes)} classes {classes}')


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
