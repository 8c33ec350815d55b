"""The paper's COCO setting (GFL R101 teacher -> R50 / R18 students, 1x, each recipe) builds
and trains one iteration on the tiny COCO-format folder (a randomly initialised R101 teacher
checkpoint stands in for the published one, which cannot be downloaded here)."""

import pytest
import torch

from distill.cli.train_distill import build_distill_config
from tests.helpers import save_detector_checkpoint, train_iterations

TEACHER = 'configs/coco/gfl_r101_fpn_1x_coco.py'
PAIRS = [('configs/coco/gfl_r50_fpn_1x_coco.py', r)
         for r in ('none', 'kd', 'ld', 'ld_vlr', 'kd_ld_vlr')]
PAIRS += [('configs/coco/gfl_r18_fpn_1x_coco.py', 'kd_ld_vlr')]
# CrossKD at the paper's place (both heads of 4 convs, 256 channels: layer=-1 is the paper's
# index 3, no adapter) and with PKD
PAIRS += [('configs/coco/gfl_r50_fpn_1x_coco.py', 'crosskd+pkd'),
          ('configs/coco/gfl_r18_fpn_1x_coco.py', 'crosskd')]
# SALT-Net students: SDR alone (no teacher), the teacher's recipe, and both in one run
PAIRS += [('configs/coco/salt_r50_fpn_1x_coco.py', r) for r in ('sdr', 'kd_ld_vlr',
                                                                 'kd_ld_vlr+sdr')]
# DDOD and MOD students: the LD paper's recipe with their general-distribution option
PAIRS += [(f'configs/coco/{s}.py', 'kd_ld_vlr') for s in ('ddod_r50_fpn_1x_coco',
                                                          'mod_fcos_r50_fpn_1x_coco')]
DIST = ('ddod', 'mod')


@pytest.fixture(scope='module')
def r101_ckpt(tmp_path_factory, repo):
    return save_detector_checkpoint(str(repo / TEACHER),
                                    tmp_path_factory.mktemp('r101') / 'gfl_r101.pth',
                                    options={'model.backbone.init_cfg': None})


@pytest.mark.parametrize('student, recipe', PAIRS, ids=lambda x: str(x).split('/')[-1])
def test_coco_distill_builds_and_trains_one_iteration(student, recipe, r101_ckpt, tiny_coco,
                                                      repo):
    options = {
        'train_dataloader.dataset.data_root': str(tiny_coco) + '/',
        'model.backbone.init_cfg': None,  # ImageNet weights would be downloaded
    }
    if student.split('/')[-1].startswith(DIST):
        options['model.bbox_head.box_dist'] = 16
    cfg = build_distill_config(str(repo / student), recipe, str(repo / TEACHER), r101_ckpt,
                               options)
    assert ('teacher' in cfg.model) == (recipe not in ('none', 'sdr'))
    seen, models = {}, []

    def check(model, log_vars):
        seen.update(log_vars)
        models.append(model)
        if model.teacher is not None:
            assert not model.teacher.training
            assert all(p.grad is None for p in model.teacher.parameters())

    losses, _ = train_iterations(cfg, iterations=1, batch_size=1, subset=1, on_step=check)
    assert torch.isfinite(torch.tensor(losses)).all()
    for edge in cfg.model.edges:
        assert 0 <= seen[f'loss_{edge["name"]}'] < float('inf')
    assert {'loss_cls', 'loss_bbox', 'loss_dfl'} <= set(seen)
    if 'salt' in student:
        assert 'loss_bbox_stage1' in seen
    if 'crosskd' in recipe:
        _check_cross_path(models[-1], student, cfg, repo)


def _check_cross_path(model, student, cfg, repo):
    """CrossKD's place from the heads' towers: ``layer`` counts from the end of each tower of
    ``stacked_convs`` convs (4 in both GFL heads: the paper's index 3); equal widths (256), so
    no adapter at all (nor for PKD's neck)."""
    from mmengine.config import Config
    heads = [Config.fromfile(str(repo / c)).model.bbox_head for c in (student, TEACHER)]
    layers = {e['student']['layer'] for e in cfg.model.edges if e['student'].get('of') == 'cross'}
    assert len(layers) == 1
    layer = layers.pop()
    expected = tuple(h.stacked_convs + layer for h in heads)
    assert expected == (3, 3)  # the paper's "3 of 4"
    assert [(p.k_s, p.k_t, p.align) for p in model.cross_paths.values()] == [(*expected, True)]
    assert heads[0].feat_channels == heads[1].feat_channels == 256
    assert len(model.adapters) == 0 and not any(
        n.startswith('adapters.') for n, _ in model.named_parameters())
