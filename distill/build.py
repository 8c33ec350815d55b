"""Build a config's model, a subset of its training data and its optimizer, outside a Runner.

For the short hand-driven loops of the tests and the benchmarks, which need the real model,
data and optimizer of a config but not a whole mmengine Runner.
"""

from __future__ import annotations

import torch

from distill.config_files import base_dataset_cfg


def build_train_parts(cfg, num_images: int, seed: int = 0):
    """The initialised model, the first ``num_images`` training images, and the optimizer.

    Args:
        cfg (Config): A detector config (``model``, ``train_dataloader``, ``optim_wrapper``).
        num_images (int): How many images of the (unwrapped) training dataset to keep.
        seed (int): Seed for the weight initialisation.

    Returns:
        tuple: ``model`` (in train mode), ``dataset`` (its pipeline applied on indexing) and
        ``optim_wrapper``.
    """
    from mmdet.registry import DATASETS, MODELS
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    init_default_scope(cfg.get('default_scope', 'mmdet'))
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    ds_cfg = base_dataset_cfg(cfg.train_dataloader.dataset).copy()
    ds_cfg.indices = num_images
    dataset = DATASETS.build(ds_cfg)
    return model, dataset, build_optim_wrapper(model, cfg.optim_wrapper)
