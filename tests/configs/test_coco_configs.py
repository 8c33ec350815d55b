"""The COCO configs build and train one iteration on a tiny COCO-format folder.

COCO itself is not here; the folder holds three digits-scenes images relabeled with COCO class
names, laid out as mmdet expects under ``data/coco/``.
"""

from pathlib import Path

import pytest

from distill.cli.common import load_config
from tests.helpers import train_iterations

REPO = Path(__file__).resolve().parents[2]
COCO_CONFIGS = sorted((REPO / 'configs' / 'coco').glob('*.py'))


@pytest.mark.parametrize('config', COCO_CONFIGS, ids=lambda p: p.stem)
def test_coco_config_builds_and_trains_one_iteration(config, tiny_coco):
    cfg = load_config(str(config), {
        'train_dataloader.dataset.data_root': str(tiny_coco) + '/',
        # the ImageNet weights would be downloaded: nothing can be here
        'model.backbone.init_cfg': None,
    })
    assert cfg.model.bbox_head.num_classes == 80
    assert cfg.train_dataloader.dataset.type == 'CheckedCocoDataset'
    assert cfg.train_dataloader.dataset.ann_file == 'annotations/instances_train2017.json'
    # Two iterations: mmdet's ResNet uses zero_init_residual (the last BN of every block starts
    # at 0), so the convs before it get their first gradient in the second iteration.
    losses, touched = train_iterations(cfg, iterations=2, batch_size=1, subset=1)
    assert len(losses) == 2
    # frozen_stages=1 freezes the stem and layer1 as in mmdet; everything else learns except the
    # regression scales of P6/P7: the folder's digits are <= ~300 px after the 1333x800 resize,
    # so the 512/1024 px anchors there get no positive, and box regression trains on positives.
    # SALT-Net has no such parameter: its class score reads every prior's box distribution
    # (quality branch) and the features at its points, so QFL on the negatives reaches both
    # stages' scales.
    untouched = {n for n, t in touched.items() if not t}
    expected = set() if config.stem.startswith('salt') else {'bbox_head.scales.3.scale',
                                                             'bbox_head.scales.4.scale'}
    if config.stem.startswith('mod'):
        # MOD's APS picks each GT's levels by loss, not by size: P6 / P7 have locations inside
        # the largest digits, and whether they win a positive there depends on the predictions
        assert untouched <= expected
    else:
        assert untouched == expected
    assert not any(n.startswith(('backbone.conv1.', 'backbone.layer1.')) for n in touched)
