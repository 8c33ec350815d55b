"""Main LD end to end against mmdet 3.3: ``DistillGraph`` + a recipe vs
``KnowledgeDistillationSingleStageDetector`` + ``LDHead`` on the same student, teacher and batch.

The whole path is compared: taps (head outputs, label assignment) -> MainRegion -> LDLoss ->
normalisation, against mmdet's own head loss. The teacher is the shipped, trained tiny GFL; the
student a seeded random initialisation; the batch four real digits-scenes training images.

- ``ld_published`` (bins averaged, weight = student confidence, constant avg factor 4) is
  mmdet's ``loss_ld`` exactly: factor 1.
- ``ld`` (the paper's KL summed over the bins, divided by the number of positives) is
  ``4 * (reg_max + 1) / num_pos`` times mmdet's ``loss_ld``: the bins summed instead of averaged
  (x ``reg_max + 1``) and the positive count instead of the constant 4 (x ``4 / num_pos``).

Both in values and in the student's gradient (same direction, the same factor).
"""

import copy

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from distill.build import build_train_parts
from distill.cli.train_distill import build_distill_config
from distill.graph.algorithm import read_tap

STUDENT = 'configs/tiny/gfl_s_digits.py'
TEACHER = 'configs/tiny/gfl_l_digits.py'
TEACHER_CKPT = 'checkpoints/gfl_l_digits_e24_seed0.pth'


def _grads(loss, named_params):
    names = [n for n, _ in named_params]
    grads = torch.autograd.grad(loss, [p for _, p in named_params], retain_graph=True,
                                allow_unused=True)
    return dict(zip(names, grads))


def _flat(grads):
    return torch.cat([g.flatten() for g in grads.values() if g is not None])


@pytest.fixture(scope='module')
def runs(repo):
    init_default_scope('mmdet')
    student, teacher, ckpt = (str(repo / p) for p in (STUDENT, TEACHER, TEACHER_CKPT))
    graphs = {}
    for recipe in ('ld_published', 'ld'):
        cfg = build_distill_config(student, recipe, teacher, ckpt)
        graphs[recipe], dataset, _ = build_train_parts(cfg, 4, seed=0)
    graphs['ld'].architecture.load_state_dict(graphs['ld_published'].architecture.state_dict())

    # mmdet's LD detector: the same student model config with LDHead (its loss_ld set to the
    # registered KnowledgeDistillationKLDivLoss, T = 10, weight 0.25, the published setting)
    model = copy.deepcopy(Config.fromfile(student).model)
    model.type = 'KnowledgeDistillationSingleStageDetector'
    model.bbox_head.type = 'LDHead'
    model.bbox_head.loss_ld = dict(type='KnowledgeDistillationKLDivLoss', loss_weight=0.25, T=10)
    model.teacher_config = teacher
    model.teacher_ckpt = ckpt
    init_default_scope('mmdet')
    mmdet_kd = MODELS.build(model)
    mmdet_kd.load_state_dict(graphs['ld_published'].architecture.state_dict())
    mmdet_kd.train()

    # the models in float64; still, GFLHead casts its box logits to float32 (``.float()`` in
    # forward_single), so LD itself is compared at float32 precision; the priors, GT boxes and
    # label assignment stay float32 too, as mmdet builds them
    for m in (*graphs.values(), mmdet_kd, mmdet_kd.teacher_model):
        m.double()
    data = graphs['ld'].data_preprocessor(pseudo_collate([dataset[i] for i in range(4)]), True)
    inputs, samples = data['inputs'].double(), data['data_samples']

    out = {name: g.loss(inputs, samples) for name, g in graphs.items()}
    out['mmdet'] = mmdet_kd.loss(inputs, samples)
    labels = torch.cat(read_tap(graphs['ld'].student_recorders, dict(tap='assign', index=1)), 1)
    head = graphs['ld'].architecture.bbox_head
    num_pos = int(((labels >= 0) & (labels < head.num_classes)).sum())
    return dict(out=out, graphs=graphs, mmdet=mmdet_kd, num_pos=num_pos,
                reg_max=head.reg_max)


def test_same_student_and_batch_give_the_same_detection_losses(runs):
    """GFLHead and LDHead compute these the same way, but with float32 steps (the quality
    targets, the avg factors): equal to float32 precision."""
    out = runs['out']
    for name in ('loss_cls', 'loss_bbox', 'loss_dfl'):
        mm = sum(out['mmdet'][name])
        for recipe in ('ld_published', 'ld'):
            torch.testing.assert_close(sum(out[recipe][name]), mm, rtol=1e-5, atol=0)
    assert runs['num_pos'] > 20  # a real batch: many positives over the three levels


def test_published_recipe_equals_mmdet_ld_head_exactly(runs):
    ours = runs['out']['ld_published']['loss_main_ld']
    mmdet = sum(runs['out']['mmdet']['loss_ld'])  # one term per FPN level
    assert mmdet > 0
    # float32 box logits (see above); mmdet also divides by avg_factor + float32 eps
    torch.testing.assert_close(ours, mmdet, rtol=1e-6, atol=0)
    g_ours = _grads(ours, list(runs['graphs']['ld_published'].architecture.named_parameters()))
    g_mm = _grads(mmdet, list(runs['mmdet'].named_parameters()))
    assert g_ours.keys() == g_mm.keys()
    reached = [n for n, g in g_mm.items() if g is not None and g.abs().sum() > 0]
    # LD reaches the backbone, the neck and the box branch; not the class branch (the
    # confidence weights are detached in both)
    assert any(n.startswith('backbone.') for n in reached)
    assert any(n.startswith('bbox_head.gfl_reg') for n in reached)
    assert not any(n.startswith('bbox_head.gfl_cls') for n in reached)
    for n in g_mm:
        assert (g_ours[n] is None) == (g_mm[n] is None), n
    flat = [_flat(g) for g in (g_ours, g_mm)]
    torch.testing.assert_close(flat[0], flat[1], rtol=1e-5, atol=1e-6 * flat[1].abs().max())


def test_default_ld_is_mmdet_times_the_documented_factor(runs):
    factor = 4 * (runs['reg_max'] + 1) / runs['num_pos']
    ours = runs['out']['ld']['loss_main_ld']
    mmdet = sum(runs['out']['mmdet']['loss_ld'])
    assert abs(factor - 1) > 0.05  # so the check below tells the two normalisations apart
    torch.testing.assert_close(ours, mmdet * factor, rtol=1e-6, atol=0)
    g_ours = _grads(ours, list(runs['graphs']['ld'].architecture.named_parameters()))
    g_mm = _grads(mmdet, list(runs['mmdet'].named_parameters()))
    flat = [_flat(g) for g in (g_ours, g_mm)]
    # the same direction ...
    cos = torch.nn.functional.cosine_similarity(flat[0], flat[1], dim=0)
    assert cos.item() == pytest.approx(1.0, abs=1e-9)
    # ... and the same factor
    torch.testing.assert_close(flat[0], flat[1] * factor, rtol=1e-5,
                               atol=1e-6 * flat[0].abs().max())



@pytest.mark.parametrize('recipe', ['ld_published', 'ld'])
def test_published_scale_grows_with_the_batch_the_default_does_not(recipe, repo):
    """The documented batch dependence: one image twice in a batch gives twice the LD with a
    constant avg factor (``ld_published``) and the same LD with the default (``ld``, a mean over
    the positives). Eval mode, so that BN keeps the two copies independent."""
    init_default_scope('mmdet')
    cfg = build_distill_config(str(repo / STUDENT), recipe, str(repo / TEACHER),
                               str(repo / TEACHER_CKPT))
    graph, dataset, _ = build_train_parts(cfg, 1, seed=0)
    graph.eval()
    values = []
    for batch in ([dataset[0]], [dataset[0], dataset[0]]):
        data = graph.data_preprocessor(pseudo_collate(batch), False)
        with torch.no_grad():
            values.append(graph.loss(data['inputs'], data['data_samples'])['loss_main_ld'])
    one, two = values
    assert one > 0
    torch.testing.assert_close(two, one * (2 if recipe == 'ld_published' else 1), rtol=1e-5,
                               atol=0)
