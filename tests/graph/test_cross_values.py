"""Cross-head outputs (CrossKD) of every head family the graph crosses (GFL, ATSS, DDOD, MOD,
SALT-Net, whose skip connection reads the head's input: the ``reads_input`` path) against a
hand-run of the teacher head's layers on the student's features: the same values, and the same
gradients w.r.t. the student's tower features and parameters (and the adapters)."""

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from torch import nn

from distill.build import build_train_parts
from distill.cli.train_distill import build_distill_config
from distill.graph import cross
from distill.models.salt_head import joint_logits
from distill.models.salt_points import classification_points, regression_points
from tests.graph.test_cross import _published_align
from tests.helpers import save_detector_checkpoint

T = 'configs/tiny/'
SHIPPED = 'checkpoints/gfl_l_digits_e24_seed0.pth'


@pytest.fixture(autouse=True)
def _scope():
    init_default_scope('mmdet')


# ------------------------------------------------------------------ the heads by hand
def _gfl(head, i, cls, reg, x):
    return head.gfl_cls(cls), head.scales[i](head.gfl_reg(reg)).float()


def _atss(head, i, cls, reg, x):
    return (head.atss_cls(cls), head.scales[i](head.atss_reg(reg)).float(),
            head.atss_centerness(reg))


def _ddod(head, i, cls, reg, x):
    return head.atss_cls(cls), head.scales[i](head.atss_reg(reg)).float(), head.atss_iou(reg)


def _mod(head, i, cls, reg, x):
    box = head.scales[i](head.conv_reg(reg)).float()
    assert head.box_dist_reg_max is None and head.centerness_on_reg
    return head.conv_cls(cls), box.clamp(min=0), head.conv_centerness(reg)


def _salt(head, i, cls, reg, x):
    """SALT-Net's Fig. 3 after the towers; ``x``: the fed input of the skip connection."""
    assert head.skip and head.d_relu
    cls = cls + x
    ltrb = F.relu(head.scales_stage1[i](head.conv_c(reg)))
    reg_points = regression_points(ltrb, head.conv_s(reg).sigmoid())
    cls_points = classification_points(reg_points, F.relu(head.conv_d(cls)).clamp(max=30.0),
                                       head.cls_points)
    box = head.scales[i](head.gfl_reg(head.reg_align(reg, reg_points))).float()
    score = head.gfl_cls(head.cls_align(cls, cls_points))
    return joint_logits(score, head.quality(head._distribution_stats(box))), box, ltrb.float()


# case: student, teacher (None: the shipped GFL teacher), recipe, layer override, predictors,
# whether the head reads its input beyond the towers (SALT's skip)
CASES = {
    'gfl': ('gfl_s_digits.py', None, 'crosskd', None, _gfl, False),
    'atss': ('atss_s_digits.py', 'atss_l_digits.py', 'crosskd_atss', None, _atss, False),
    'ddod': ('ddod_s_digits.py', 'ddod_s_digits.py', 'crosskd_ddod', None, _ddod, False),
    'mod': ('mod_s_digits.py', 'mod_s_digits.py', 'crosskd_fcos', None, _mod, False),
    'mod_layer1': ('mod_s_digits.py', 'mod_s_digits.py', 'crosskd_fcos', -1, _mod, False),
    'salt': ('salt_s_digits.py', 'salt_l_digits.py', 'crosskd', None, _salt, True),
}


def _run(case, repo, tmp_path, monkeypatch):
    """One loss step on 2 images; the cross forward's output and the student features it read."""
    student, teacher, recipe, layer, _, _ = CASES[case]
    if teacher is None:
        teacher_cfg, ckpt = str(repo / T / 'gfl_l_digits.py'), str(repo / SHIPPED)
    else:
        teacher_cfg = str(repo / T / teacher)
        ckpt = save_detector_checkpoint(teacher_cfg, tmp_path / 'teacher.pth', seed=1)
    cfg = build_distill_config(str(repo / T / student), recipe, teacher_cfg, ckpt)
    if layer is not None:
        for edge in cfg.model.edges:
            edge['student']['layer'] = layer
    model, dataset, _ = build_train_parts(cfg, 4, 0)
    calls, original = [], cross.cross_forward

    def recorded(path, student_rec, *args, **kwargs):
        out = original(path, student_rec, *args, **kwargs)
        feats = {t: cross.levels(student_rec, cross.CrossPath.tap(path.k_s, t))
                 for t in ('cls', 'reg')}
        feats['neck'] = cross.levels(student_rec, 'neck') if path.reads_input else None
        calls.append((out, feats))
        return out

    monkeypatch.setattr(cross, 'cross_forward', recorded)
    data = model.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), True)
    model.loss(data['inputs'], data['data_samples'])
    heads = [Config.fromfile(c).model.bbox_head for c in (str(repo / T / student), teacher_cfg)]
    return model, data['inputs'], calls, heads


def _tower(head, tower, x, k):
    """The pre-activation feature after the first ``k`` convs of a tower (``x`` at 0)."""
    convs = getattr(head, f'{tower}_convs')
    for i in range(k):
        x = convs[i](x, activate=i < k - 1)
    return x


def _hand_cross(model, inputs, k_s, k_t, key, predict, reads_input):
    """The teacher's towers from conv ``k_t`` on and its predictors, run by hand on the
    student's features after ``k_s`` convs: through the graph's adapters where the widths
    differ, re-standardised to the teacher's feature at the same place (CrossKD's published
    formula), then the teacher tower's ReLU (none at depth 0, the FPN feature). A head that
    reads its input (SALT's skip) gets the student's FPN feature, adapted and re-standardised
    to the teacher's FPN feature.

    Returns:
        tuple: the per-output lists of per-level maps, and the student features they came from
        (``{'cls' | 'reg' | 'neck': list[Tensor]}``).
    """
    student, teacher = model.architecture, model.teacher
    s_feats = student.extract_feat(inputs)
    with torch.no_grad():
        t_feats = teacher.extract_feat(inputs)
    head = teacher.bbox_head

    def feed(name, s, t):
        adapter = model.adapters[name] if name in model.adapters else nn.Identity()
        return _published_align(adapter(s), t)

    outs, feats = [], {'cls': [], 'reg': [], 'neck': list(s_feats) if reads_input else None}
    for i, (xs, xt) in enumerate(zip(s_feats, t_feats)):
        fed = {}
        for tower in ('cls', 'reg'):
            hs = _tower(student.bbox_head, tower, xs, k_s)
            feats[tower].append(hs)
            with torch.no_grad():
                ht = _tower(head, tower, xt, k_t)
            f = feed(f'{key}_{tower}', hs, ht)
            if k_t:
                assert isinstance(getattr(head, f'{tower}_convs')[k_t - 1].activate, nn.ReLU)
                f = F.relu(f)
            for conv in getattr(head, f'{tower}_convs')[k_t:]:
                f = conv(f)
            fed[tower] = f
        x = feed(f'{key}_input', xs, xt) if reads_input else None
        outs.append(predict(head, i, fed['cls'], fed['reg'], x))
    return tuple(list(o) for o in zip(*outs)), feats


def _probe(outputs, seed=0):
    """A scalar of all the outputs with random weights (every element's gradient differs)."""
    g = torch.Generator().manual_seed(seed)
    return sum((o * torch.randn(o.shape, generator=g)).sum() for out in outputs for o in out)


def _grads(loss, tensors):
    return torch.autograd.grad(loss, tensors, retain_graph=True, allow_unused=True)


def _assert_grads_close(graph, hand, names):
    """Equal within float32 round-off, relative to the largest gradient of the set (some are
    zero but for round-off: the re-standardisation cancels an adapter's or a GN's bias)."""
    scale = max(b.abs().max() for b in hand if b is not None)
    assert scale > 0
    for a, b, name in zip(graph, hand, names):
        assert (a is None) == (b is None), (name, a is None, b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5 * scale,
                                       msg=lambda m, name=name: f'{name}: {m}')


@pytest.mark.parametrize('case', sorted(CASES))
def test_cross_values_and_gradients_equal_a_hand_run(case, repo, tmp_path, monkeypatch):
    _, _, recipe, layer, predict, reads_input = CASES[case]
    model, inputs, calls, (s_cfg, t_cfg) = _run(case, repo, tmp_path, monkeypatch)
    # where the feature enters, from the towers' definitions: `layer` counts from their ends
    if layer is None:
        layer = Config.fromfile(str(repo / 'configs/recipes' / f'{recipe}.py')).cross['layer']
    k_s, k_t = s_cfg.stacked_convs + layer, t_cfg.stacked_convs + layer
    path = next(iter(model.cross_paths.values()))
    assert (path.k_s, path.k_t, path.align, path.reads_input) == (k_s, k_t, True, reads_input)
    wide = s_cfg.feat_channels != t_cfg.feat_channels
    expected = [f'{path.key}_{t}' for t in ('cls', 'reg', 'input')[:2 + reads_input]]
    assert sorted(model.adapters) == (sorted(expected) if wide else [])
    assert len(calls) == 1  # one cross forward serves every edge
    graph, graph_feats = calls[0]
    hand, hand_feats = _hand_cross(model, inputs, k_s, k_t, path.key, predict, reads_input)
    assert len(graph) == len(hand) and all(len(g) == len(h) == 3 for g, h in zip(graph, hand))
    for i, (g_out, h_out) in enumerate(zip(graph, hand)):
        for level, (a, b) in enumerate(zip(g_out, h_out)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4,
                                       msg=lambda m, i=i, lv=level: f'output {i} level {lv}: {m}')
    # not the teacher's own outputs: the student's features went in
    with torch.no_grad():
        own = model.teacher.bbox_head(model.teacher.extract_feat(inputs))
    assert not torch.allclose(own[0][0], graph[0][0], atol=1e-3)

    # the gradients w.r.t. the student's features the cross path read (the tower features at
    # depth k_s; with reads_input also the FPN features, which reach it along both ways) ...
    assert all(o.requires_grad for out in graph for o in out)
    kinds = [t for t in ('cls', 'reg', 'neck') if hand_feats[t] is not None]
    names = [f'{t}[{lv}]' for t in kinds for lv in range(len(hand_feats[t]))]
    g_graph = _grads(_probe(graph), [f for t in kinds for f in graph_feats[t]])
    g_hand = _grads(_probe(hand), [f for t in kinds for f in hand_feats[t]])
    assert all(g is not None and g.abs().sum() > 0 for g in g_graph), names
    _assert_grads_close(g_graph, g_hand, names)
    # ... and w.r.t. every student parameter and adapter
    params = [(n, p) for n, p in model.named_parameters()
              if p.requires_grad and n.startswith(('architecture.', 'adapters.'))]
    g_graph = _grads(_probe(graph), [p for _, p in params])
    g_hand = _grads(_probe(hand), [p for _, p in params])
    _assert_grads_close(g_graph, g_hand, [n for n, _ in params])
    # it reaches the adapters and the student below the cross point, nothing of its head above
    reached = {n for (n, _), g in zip(params, g_graph) if g is not None and g.abs().sum() > 0}
    assert reached >= {n for n, _ in params if n.startswith('adapters.')}
    below = {f'architecture.bbox_head.{t}_convs.{i}.conv.weight' for t in ('cls', 'reg')
             for i in range(k_s)} | {'architecture.neck.fpn_convs.0.conv.weight'}
    assert reached >= below, sorted(below - reached)
    head_reached = {n for n in reached if n.startswith('architecture.bbox_head.')}
    assert all(n.split('.')[2] in ('cls_convs', 'reg_convs') and int(n.split('.')[3]) < k_s
               for n in head_reached), sorted(head_reached)
    assert all(p.grad is None for p in model.teacher.parameters())
