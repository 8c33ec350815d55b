"""Cross-head outputs (CrossKD) on the tiny GFL pair: a hand-run of the teacher's layers on the
student's features, where the gradient goes, and every refusal."""

import pytest
import torch
import torch.nn.functional as F
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from distill.build import build_train_parts
from distill.cli.train_distill import build_distill_config
from distill.errors import RecipeError
from distill.graph import DistillGraph, cross

STUDENT = 'configs/tiny/gfl_s_digits.py'
TEACHER = 'configs/tiny/gfl_l_digits.py'
SHIPPED = 'checkpoints/gfl_l_digits_e24_seed0.pth'


@pytest.fixture(autouse=True)
def _scope():
    init_default_scope('mmdet')


def _one_step(repo, recipe, monkeypatch, cfg_options=None, edges=None):
    """Build the run, run one loss step on 2 images, keep what cross_forward returned."""
    cfg = build_distill_config(str(repo / STUDENT), recipe, str(repo / TEACHER),
                               str(repo / SHIPPED), cfg_options)
    if edges is not None:
        cfg.model.edges = edges
    model, dataset, _ = build_train_parts(cfg, 4, 0)
    calls = []
    original = cross.cross_forward

    def recorded(*args, **kwargs):
        calls.append(original(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(cross, 'cross_forward', recorded)
    data = model.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), True)
    losses = model.loss(data['inputs'], data['data_samples'])
    return model, data, losses, calls


def _published_align(s, t):
    """CrossKD's published re-standardisation, written the way its paper's code reads:
    channels first, flattened over batch and positions."""
    n, c, h, w = s.shape
    a = s.permute(1, 0, 2, 3).reshape(c, -1)
    b = t.permute(1, 0, 2, 3).reshape(c, -1)
    a = (a - a.mean(-1, keepdim=True)) / (a.std(-1, keepdim=True) + 1e-6)
    a = a * b.std(-1, keepdim=True) + b.mean(-1, keepdim=True)
    return a.reshape(c, n, h, w).permute(1, 0, 2, 3)


def _hand_cross(model, inputs, k_s, k_t, key):
    """The teacher's towers from conv k_t on, its predictors and scales, run by hand on the
    student's pre-activation feature after k_s convs (through the graph's adapters)."""
    student, teacher = model.architecture, model.teacher
    s_feats = student.extract_feat(inputs)
    with torch.no_grad():
        t_feats = teacher.extract_feat(inputs)
    head = teacher.bbox_head
    cls_out, reg_out = [], []
    for xs, xt, scale in zip(s_feats, t_feats, head.scales):
        fed = {}
        for tower in ('cls', 'reg'):
            s_convs = getattr(student.bbox_head, f'{tower}_convs')
            t_convs = getattr(head, f'{tower}_convs')
            hs, ht = xs, xt
            for i in range(k_s):
                hs = s_convs[i](hs, activate=i < k_s - 1)
            with torch.no_grad():
                for i in range(k_t):
                    ht = t_convs[i](ht, activate=i < k_t - 1)
            f = F.relu(_published_align(model.adapters[f'{key}_{tower}'](hs), ht))
            for conv in t_convs[k_t:]:
                f = conv(f)
            fed[tower] = f
        cls_out.append(head.gfl_cls(fed['cls']))
        reg_out.append(scale(head.gfl_reg(fed['reg'])).float())
    return cls_out, reg_out


def test_cross_outputs_equal_a_hand_run_of_the_teacher_layers(repo, monkeypatch):
    model, data, losses, calls = _one_step(repo, 'crosskd', monkeypatch)
    # layer=-1: the student (2 convs) enters after 1 conv, the teacher (4 convs) at conv 3
    path = next(iter(model.cross_paths.values()))
    assert (path.k_s, path.k_t, path.align) == (1, 3, True)
    assert len(calls) == 1  # one cross forward serves the three edges
    cls_hand, reg_hand = _hand_cross(model, data['inputs'], 1, 3, path.key)
    cls_graph, reg_graph = calls[0][0], calls[0][1]
    assert len(cls_graph) == len(cls_hand) == 3
    for a, b in zip(cls_graph, cls_hand):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for a, b in zip(reg_graph, reg_hand):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # and they are not the teacher's own predictions (the student's features went in)
    with torch.no_grad():
        own = model.teacher.bbox_head(model.teacher.extract_feat(data['inputs']))[0]
    assert not torch.allclose(own[0], cls_graph[0], atol=1e-2)
    for name in ('crosskd_cls', 'crosskd_kl', 'crosskd_giou'):
        assert torch.isfinite(losses[f'loss_{name}']) and losses[f'loss_{name}'] > 0


def test_cross_gradient_reaches_the_student_below_k_and_the_adapters_only(repo, monkeypatch):
    model, _, losses, _ = _one_step(repo, 'crosskd', monkeypatch)
    sum(v for k, v in losses.items() if k.startswith('loss_crosskd')).backward()
    head = model.architecture.bbox_head
    below = [head.cls_convs[0].conv.weight, head.reg_convs[0].conv.weight,
             model.architecture.neck.fpn_convs[0].conv.weight]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in below)
    # above the cross point (the student's last conv and its predictors): GT losses only
    above = [head.cls_convs[1].conv.weight, head.reg_convs[1].conv.weight,
             head.gfl_cls.weight, head.gfl_reg.weight]
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in above)
    assert sorted(model.adapters) == ['cross_s1_t3_cls', 'cross_s1_t3_reg']
    for adapter in model.adapters.values():  # 48 -> 96 channels, trained
        assert (adapter.in_channels, adapter.out_channels) == (48, 96)
        assert adapter.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())


def test_align_option_and_explicit_student_layer(repo, monkeypatch):
    edges = [dict(name='c', loss=dict(type='QFLKDLoss'),
                  student=dict(output='cls_logits', of='cross', layer=2, student_layer=0,
                               align=False),
                  teacher=dict(output='cls_logits'), region=dict(type='AllRegion'))]
    model, data, _, calls = _one_step(repo, 'kd', monkeypatch, edges=edges)
    path = next(iter(model.cross_paths.values()))
    assert (path.k_s, path.k_t, path.align) == (0, 2, False)
    # student_layer=0: the FPN feature, no re-standardisation, adapter, then the activation
    head = model.teacher.bbox_head
    x = model.architecture.extract_feat(data['inputs'])[0]
    f = F.relu(model.adapters[f'{path.key}_cls'](x))
    for conv in head.cls_convs[2:]:
        f = conv(f)
    torch.testing.assert_close(calls[0][0][0], head.gfl_cls(f), rtol=1e-4, atol=1e-4)


def _graph(repo, student_ref, teacher_side=None, teacher_cfg=TEACHER, teacher_options=None):
    from mmengine.config import Config
    student = Config.fromfile(str(repo / STUDENT)).model
    teacher = Config.fromfile(str(repo / teacher_cfg))
    teacher.merge_from_dict(teacher_options or {})
    edge = dict(name='c', loss=dict(type='QFLKDLoss'), student=student_ref,
                teacher=teacher_side or dict(output='cls_logits'),
                region=dict(type='AllRegion'))
    return DistillGraph(architecture=student, teacher=teacher.model,
                        teacher_ckpt=str(repo / SHIPPED), edges=[edge], edges_source='r.py',
                        pair_names=('s.py', 't.py'))


def test_refusals_name_both_heads_the_layer_and_what_differs(repo):
    with pytest.raises(RecipeError) as err:  # the student tower has 2 convs
        _graph(repo, dict(output='cls_logits', of='cross', layer=3))
    msg = str(err.value)
    for part in ('r.py', "'c'", 'GFLHead (s.py) into GFLHead (t.py)', 'layer=3',
                 'student 2 convs, teacher 4', 'student_layer'):
        assert part in msg, (part, msg)
    with pytest.raises(RecipeError, match=r'layer=-6.*depth 0..2 \(here -4\)'):
        _graph(repo, dict(output='cls_logits', of='cross', layer=-6))
    with pytest.raises(RecipeError, match="layer='last' must be an int"):
        _graph(repo, dict(output='cls_logits', of='cross', layer='last'))
    with pytest.raises(RecipeError, match="layer=None must be an int"):
        _graph(repo, dict(output='cls_logits', of='cross', layer=None))
    with pytest.raises(RecipeError, match='align=1 must be True or False'):
        _graph(repo, dict(output='cls_logits', of='cross', align=1))
    with pytest.raises(RecipeError, match=r"reads the teacher's 'labels', which comes from "
                                          r"label assignment"):
        _graph(repo, dict(output='labels', of='cross'))
    with pytest.raises(RecipeError, match=r"a cross-head output.*not of='student'"):
        _graph(repo, dict(output='cls_logits', of='cross'),
               dict(output='cls_logits', of='student'))
    with pytest.raises(RecipeError, match=r"unknown field\(s\) \['layer'\]"):
        _graph(repo, dict(output='cls_logits', layer=1))


def test_refuses_a_head_it_cannot_cross(repo, tmp_path):
    """RTMDet's SepBN head (a tower per level) declares its outputs but cannot be crossed,
    although it derives from ATSS's head, which can."""
    from mmengine.config import Config

    from tests.helpers import save_detector_checkpoint
    rtmdet = str(repo / 'configs/tiny/rtmdet_s_digits.py')
    cfg = Config.fromfile(rtmdet)
    ckpt = save_detector_checkpoint(rtmdet, tmp_path / 'r.pth')
    edge = dict(name='c', loss=dict(type='QFLKDLoss'),
                student=dict(output='cls_logits', of='cross'),
                teacher=dict(output='cls_logits'), region=dict(type='AllRegion'))
    with pytest.raises(RecipeError, match=r'cannot cross GFLHead \(s.py\) into RTMDetSepBNHead '
                                          r'\(rtmdet.py\).*the teacher head RTMDetSepBNHead is '
                                          r'not one the graph can cross.*GFLHead'):
        DistillGraph(architecture=Config.fromfile(str(repo / STUDENT)).model,
                     teacher=cfg.model, teacher_ckpt=ckpt, edges=[edge],
                     edges_source='r.py', pair_names=('s.py', 'rtmdet.py'))


def test_refuses_a_tower_conv_whose_pre_activation_cannot_be_tapped(repo):
    from mmcv.cnn import ConvModule
    from mmdet.registry import MODELS
    from mmengine.config import Config
    teacher = MODELS.build(Config.fromfile(str(repo / TEACHER)).model)
    # same parameters (the shipped checkpoint loads), but the norm comes after the activation
    teacher.bbox_head.reg_convs[2] = ConvModule(
        96, 96, 3, padding=1, norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        order=('conv', 'act', 'norm'))
    edge = dict(name='c', loss=dict(type='QFLKDLoss'),
                student=dict(output='cls_logits', of='cross', layer=-1),
                teacher=dict(output='cls_logits'), region=dict(type='AllRegion'))
    with pytest.raises(RecipeError, match=r'cannot cross GFLHead \(s.py\) into GFLHead \(t.py\) '
                                          r'at layer=-1: the teacher reg_convs\[2\] is a '
                                          r'ConvModule, not a ConvModule ordered conv, norm, act'):
        DistillGraph(architecture=Config.fromfile(str(repo / STUDENT)).model, teacher=teacher,
                     teacher_ckpt=str(repo / SHIPPED), edges=[edge], edges_source='r.py',
                     pair_names=('s.py', 't.py'))


def _gfl_detector(convs, channels):
    from mmdet.registry import MODELS
    from torch import nn
    holder = nn.Module()
    holder.bbox_head = MODELS.build(dict(
        type='GFLHead', num_classes=3, in_channels=channels, feat_channels=channels,
        stacked_convs=convs, norm_cfg=dict(type='GN', num_groups=4, requires_grad=True),
        anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=8,
                              scales_per_octave=1, strides=[8, 16])))
    return holder


@pytest.mark.parametrize('ref, s_convs, t_convs, expected', [
    (dict(layer=-1), 4, 4, (3, 3)),          # the paper's GFL/ATSS index 3 of 4
    (dict(layer=-2), 4, 4, (2, 2)),          # the paper's FCOS index 2 of 4
    (dict(layer=3), 4, 4, (3, 3)),
    (dict(layer=-1), 2, 4, (1, 3)),          # from the end of each tower
    (dict(layer=0), 2, 4, (0, 0)),           # the FPN feature into the whole teacher head
    (dict(layer=-1, student_layer=2), 2, 4, (2, 3)),
    (dict(layer=4), 4, 4, (4, 4)),           # the teacher's predictors only
])
def test_layer_resolution(ref, s_convs, t_convs, expected):
    path = cross.resolve(dict(output='cls_logits', of='cross', **ref),
                         _gfl_detector(s_convs, 8), _gfl_detector(t_convs, 16), ('s', 't'), 'r')
    assert (path.k_s, path.k_t) == expected
    assert path.align and not path.reads_input
    adapters = cross.adapters_for(path, _gfl_detector(s_convs, 8).bbox_head,
                                  _gfl_detector(t_convs, 16).bbox_head)
    assert sorted(adapters) == [f'{path.key}_cls', f'{path.key}_reg']
    assert all((a.in_channels, a.out_channels) == (8, 16) for a in adapters.values())
    same = cross.adapters_for(path, _gfl_detector(s_convs, 16).bbox_head,
                              _gfl_detector(t_convs, 16).bbox_head)
    assert same == {}
