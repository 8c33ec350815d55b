"""CWD, MGD and FGD as edges of the graph on the tiny GFL pair (student FPN 48 channels, teacher
96, 3 levels): a few real training steps (finite, positive edge losses; the generation blocks
and GcBlocks are trained with the student, through the neck adapter; the teacher untouched)."""

import torch

from distill.cli.train_distill import build_distill_config, read_recipes
from tests.helpers import save_detector_checkpoint, teacher_checker, train_iterations

STUDENT, TEACHER = 'configs/tiny/gfl_s_digits.py', 'configs/tiny/gfl_l_digits.py'


def test_recipes_read_and_name_their_defaults():
    edges, files = read_recipes('cwd+mgd+fgd')
    assert [f.rsplit('/', 1)[-1] for f in files] == ['cwd.py', 'mgd.py', 'fgd.py']
    loss = {e['name']: e['loss'] for e in edges}
    assert loss['cwd'] == dict(type='CWDFeatureLoss', tau=1.0, loss_weight=10.0)
    assert (loss['mgd']['alpha_mgd'], loss['mgd']['lambda_mgd']) == (2e-5, 0.65)
    assert [loss['fgd'][k] for k in ('temp', 'alpha_fgd', 'beta_fgd', 'gamma_fgd',
                                     'lambda_fgd')] == [0.5, 1e-3, 5e-4, 5e-4, 5e-6]
    assert {e['name']: e['region']['type'] for e in edges}['fgd'] == 'FGDRegion'


def test_cwd_mgd_fgd_train_on_the_tiny_pair(tmp_path, repo):
    ckpt = save_detector_checkpoint(str(repo / TEACHER), tmp_path / 'teacher.pth', seed=1)
    cfg = build_distill_config(str(repo / STUDENT), 'cwd+mgd+fgd', str(repo / TEACHER), ckpt)
    seen, models = {}, []
    check = teacher_checker(seen)

    def on_step(model, log_vars):
        check(model, log_vars)
        models.append(model)
        for name in ('mgd', 'fgd'):  # the loss modules' own parameters get gradient
            grads = [p.grad for p in model.edge_losses[name].parameters()]
            assert all(g is not None and torch.isfinite(g).all() for g in grads), name
            assert any(g.abs().sum() > 0 for g in grads), name

    losses, touched = train_iterations(cfg, iterations=2, batch_size=2, subset=4,
                                       on_step=on_step)
    assert all(torch.isfinite(torch.tensor(losses)))
    for name in ('cwd', 'mgd', 'fgd'):
        assert 0 < seen[f'loss_{name}'] < float('inf'), name
    model = models[-1]
    # the recipes' channels / num_levels (None) read from the tiny teacher's neck: 96, P3-P5
    for name in ('mgd', 'fgd'):
        assert (model.edge_losses[name].channels, model.edge_losses[name].num_levels) == (96, 3)
    assert len(model.edge_losses['mgd'].generation) == 3
    assert 'neck' in model.adapters and touched['adapters.neck.weight']
    assert touched['edge_losses.mgd.generation.0.2.weight']
    assert touched['edge_losses.fgd.gc_student.0.channel_add.3.weight']
    assert touched['edge_losses.fgd.gc_teacher.2.channel_add.3.weight']
    # FGD's region: a foreground weight on some locations, the rest background
    fg = model.last_regions['fgd']
    assert fg.shape[0] == 2 and (fg > 0).any() and (fg == 0).any() and fg.max() <= 1


def test_neck_widths_are_filled_from_the_neck_the_edge_reads():
    """channels / num_levels None: the teacher's neck (FPN: num_outs; PAFPN: one level per
    input), the student's for an edge without teacher; explicit values are kept; no neck is a
    one-line error naming the recipe and the edge."""
    import pytest
    from mmdet.registry import MODELS
    from torch import nn

    from distill.errors import ConfigError
    from distill.graph.edges import fill_neck_width

    def detector(neck):
        model = nn.Module()
        model.neck = MODELS.build(neck)
        return model

    fpn = detector(dict(type='FPN', in_channels=[8, 16, 32], out_channels=24, num_outs=5))
    pafpn = detector(dict(type='CSPNeXtPAFPN', in_channels=[8, 16, 32], out_channels=16,
                          num_csp_blocks=1))
    edge = dict(name='mgd', loss=dict(type='MGDFeatureLoss', channels=None, num_levels=None))
    assert fill_neck_width(edge, pafpn, fpn, True, 'r.py')['loss']['channels'] == 24
    assert fill_neck_width(edge, pafpn, fpn, True, 'r.py')['loss']['num_levels'] == 5
    assert fill_neck_width(edge, fpn, pafpn, True, 'r.py')['loss'] == dict(
        type='MGDFeatureLoss', channels=16, num_levels=3)
    assert fill_neck_width(edge, fpn, None, False, 'r.py')['loss']['channels'] == 24
    assert edge['loss']['channels'] is None  # the recipe's own dict is not changed
    fixed = dict(edge, loss=dict(edge['loss'], channels=256, num_levels=5))
    assert fill_neck_width(fixed, fpn, pafpn, True, 'r.py') is fixed
    with pytest.raises(ConfigError, match=r"r\.py: edge 'mgd': loss MGDFeatureLoss .* no neck"):
        fill_neck_width(edge, fpn, nn.Module(), True, 'r.py')
