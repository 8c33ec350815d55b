"""The DistillGraph on the tiny GFL pair: real mmdet models, real data, real checkpoints."""

import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from distill.build import build_train_parts
from distill.checkpoint import CheckpointError
from distill.cli.train_distill import build_distill_config
from distill.errors import RecipeError
from distill.graph import DistillGraph, NonFiniteLossError, PairMismatchError
from tests.helpers import save_detector_checkpoint, train_iterations

STUDENT = 'configs/tiny/gfl_s_digits.py'
TEACHER = 'configs/tiny/gfl_l_digits.py'


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    return save_detector_checkpoint(TEACHER, tmp_path_factory.mktemp('t') / 'teacher.pth', 1)


@pytest.fixture(autouse=True)
def _scope():
    init_default_scope('mmdet')


@pytest.mark.parametrize('recipe', ['kd', 'ld', 'ld_vlr', 'kd_ld_vlr', 'ld_published',
                                    'ld_vlr_published'])
def test_tiny_distill_steps_train_the_student_only(recipe, teacher_ckpt, repo):
    cfg = build_distill_config(str(repo / STUDENT), recipe, str(repo / TEACHER), teacher_ckpt)
    seen = {}

    def check(model, log_vars):
        teacher = model.teacher
        assert not teacher.training
        assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
        for edge in cfg.model.edges:
            value = log_vars[f'loss_{edge["name"]}']
            assert 0 < value < float('inf')
            seen[edge['name']] = value
        seen['teacher'] = {k: v.clone() for k, v in teacher.state_dict().items()}
        seen.setdefault('teacher0', seen['teacher'])

    losses, touched = train_iterations(cfg, iterations=3, batch_size=2, subset=6, on_step=check)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(touched.values()), [n for n, t in touched.items() if not t]
    # the student's parameters are all the graph has (the teacher is outside the module tree)
    assert all(n.startswith('architecture.') for n in touched)
    assert len(seen) == len(cfg.model.edges) + 2
    for k, v in seen['teacher0'].items():  # the teacher did not move, BN statistics included
        assert torch.equal(v, seen['teacher'][k]), k


def test_teacher_stays_out_of_optimizer_checkpoint_and_train_mode(teacher_ckpt, repo):
    cfg = build_distill_config(str(repo / STUDENT), 'kd_ld_vlr', str(repo / TEACHER),
                               teacher_ckpt)
    model, _, optim = build_train_parts(cfg, 2)
    in_optim = {id(p) for g in optim.optimizer.param_groups for p in g['params']}
    assert in_optim == {id(p) for p in model.architecture.parameters()}
    assert not in_optim & {id(p) for p in model.teacher.parameters()}
    assert all(k.startswith(('architecture.', 'data_preprocessor.'))
               for k in model.state_dict())
    model.train()
    assert model.architecture.training and not model.teacher.training
    model.to(torch.float64)  # _apply reaches the hidden teacher
    assert next(model.teacher.parameters()).dtype == torch.float64


def test_distill_loss_does_not_depend_on_batch_size(teacher_ckpt, repo):
    """The same 4 images as one batch of 4 and as 4 batches of 1: every edge's loss is a
    weighted mean over its region (normalised by its weight or its size), so the batch's loss
    equals the normaliser-weighted mean of the single-image losses (with equal regions, the
    plain mean). The published
    LD code sums over positives and divides by 4, so its batch loss is 4x larger."""
    edges = [dict(name=n, loss=loss, student=dict(tap='head', index=i),
                  teacher=dict(tap='head', index=i), region=region)
             for n, loss, i, region in [
                 ('all_ld', dict(type='LDLoss', T=10), 1, dict(type='AllRegion')),
                 ('main_kd', dict(type='KDLoss', T=2), 0, dict(type='MainRegion', weight='ones')),
                 ('vlr_ld', dict(type='LDLoss', T=10), 1, dict(type='VLRRegion'))]]
    edges.append(dict(name='main_ld_count', loss=dict(type='LDLoss', T=10), normalize='count',
                      student=dict(tap='head', index=1), teacher=dict(tap='head', index=1),
                      region=dict(type='MainRegion', weight='score')))
    cfg = build_distill_config(str(repo / STUDENT), 'none', None, None)
    cfg.model.update(teacher=dict(build_distill_config(
        str(repo / TEACHER), 'none').model.architecture), teacher_ckpt=teacher_ckpt, edges=edges)
    # 256 x 256 images: a batch of 4 needs no padding, so each image's maps are its own
    cfg.train_dataloader.dataset.pipeline[2].keep_ratio = False
    model, dataset, _ = build_train_parts(cfg, 4)
    model.eval()  # BN on running statistics: a batch of 1 and of 4 see the same network
    items = [dataset[i] for i in range(4)]

    def edge_losses(batch):
        data = model.data_preprocessor(pseudo_collate(batch), True)
        with torch.no_grad():
            losses = model(**data, mode='loss')
        # the normaliser of each image: its region weight, or its region size for 'count'
        weights = {k: (v > 0).sum(1).double() if k.endswith('count') else v.sum(1).double()
                   for k, v in model.last_regions.items()}
        return {e['name']: float(losses[f'loss_{e["name"]}']) for e in edges}, weights

    together, w4 = edge_losses(items)
    singles = [edge_losses([it]) for it in items]
    for e in edges:
        name = e['name']
        w = torch.tensor([float(ws[name][0]) for _, ws in singles], dtype=torch.float64)
        torch.testing.assert_close(w, w4[name].double())  # same regions image by image
        vals = torch.tensor([ls[name] for ls, _ in singles], dtype=torch.float64)
        expected = float((w * vals).sum() / w.sum())
        assert together[name] == pytest.approx(expected, rel=1e-4), name
        assert w.min() >= 1  # the clamp(min=1) of the normaliser is not what makes it hold
    assert together['all_ld'] == pytest.approx(float(vals.new_tensor(
        [ls['all_ld'] for ls, _ in singles]).mean()), rel=1e-4)


def test_self_distillation_taps_the_student_itself(repo):
    """No teacher: a teacher side with ``of='student'`` reads the student itself. Student vs
    its own (detached) head outputs gives a zero loss: the wiring, not a method."""
    cfg = build_distill_config(str(repo / STUDENT), 'none')
    init_default_scope('mmdet')  # plain Python under mmdet's scope: the graph still builds
    graph = DistillGraph(
        architecture=cfg.model.architecture,
        edges=[dict(name='self_ld', loss=dict(type='LDLoss', T=10),
                    student=dict(output='box_dist'),
                    teacher=dict(output='box_dist', of='student'),
                    region=dict(type='MainRegion'))])
    assert graph.teacher is None and graph.self_distill
    _, dataset, _ = build_train_parts(cfg, 2)
    data = graph.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), True)
    losses = graph(**data, mode='loss')
    assert losses['loss_self_ld'].item() == 0
    assert graph.last_regions['self_ld'].sum() > 0


@pytest.mark.parametrize('teacher, recipe, field', [
    ('configs/tiny/gfl_l_trees.py', 'kd', 'num_classes'),
])
def test_incompatible_pairs_fail_naming_files_and_fields(teacher, recipe, field, teacher_ckpt,
                                                         repo):
    cfg = build_distill_config(str(repo / STUDENT), recipe, str(repo / teacher), teacher_ckpt)
    with pytest.raises(PairMismatchError) as err:
        build_train_parts(cfg, 1)
    msg = str(err.value)
    assert field in msg and str(repo / STUDENT) in msg and str(repo / teacher) in msg


def test_a_recipe_reading_an_output_the_head_lacks_is_refused(teacher_ckpt, repo):
    """An ATSS teacher predicts box deltas, not distributions: the LD recipe is refused while
    the graph is built (before training), naming the recipe file, the edge, the head and the
    missing output, and listing what the head has."""
    teacher = str(repo / 'configs/tiny/atss_l_digits.py')
    cfg = build_distill_config(str(repo / STUDENT), 'ld', teacher, teacher_ckpt)
    with pytest.raises(RecipeError) as err:
        build_train_parts(cfg, 1)
    msg = str(err.value)
    assert "recipes/ld.py: edge 'main_ld' needs the output 'box_dist' of the teacher head" in msg
    assert 'ATSSHead (outputs: box_deltas, boxes, centerness, cls_logits' in msg
    assert teacher in msg
    # ... and says which option gives the head a distribution
    assert ("it predicts box deltas: use the ATSS head with the general-distribution option, "
            "model.bbox_head.type='ATSSDistHead' and box_dist=16 in " + teacher) in msg
    # the student side too, and a teacher is never asked for label-assignment outputs
    sdr = build_distill_config(str(repo / STUDENT), 'sdr')
    with pytest.raises(RecipeError, match=r"edge 'sdr' needs the output 'box_stage1' of the "
                                          r"student head, which GFLHead"):
        build_train_parts(sdr, 1)
    kd = build_distill_config(str(repo / STUDENT), 'kd', str(repo / TEACHER), teacher_ckpt)
    with pytest.raises(RecipeError, match="edge 'main_kd' reads the teacher's 'cls_logits' but "
                                          "the run has no teacher"):
        DistillGraph(architecture=kd.model.architecture, edges=kd.model.edges)
    cfg = build_distill_config(str(repo / STUDENT), 'kd', str(repo / TEACHER), teacher_ckpt)
    cfg.model.edges[0]['teacher'] = dict(output='labels')
    with pytest.raises(RecipeError, match="reads the teacher's 'labels', which comes from label "
                                          "assignment"):
        build_train_parts(cfg, 1)


def test_strides_mismatch_is_reported(teacher_ckpt, repo):
    cfg = build_distill_config(str(repo / STUDENT), 'ld', str(repo / TEACHER), teacher_ckpt)
    cfg.model.teacher.bbox_head.anchor_generator.strides = [8, 16, 64]
    with pytest.raises(PairMismatchError, match=r'strides.*\(64, 64\)'):
        build_train_parts(cfg, 1)


def test_wrong_teacher_checkpoint_is_named(tmp_path, repo):
    student_ckpt = save_detector_checkpoint(STUDENT, tmp_path / 'student.pth')
    cfg = build_distill_config(str(repo / STUDENT), 'ld', str(repo / TEACHER), student_ckpt)
    with pytest.raises(CheckpointError, match='student.pth.*does not fit the teacher config'):
        build_train_parts(cfg, 1)
    with pytest.raises(CheckpointError, match='not found'):
        build_distill_config(str(repo / STUDENT), 'ld', str(repo / TEACHER), 'nope.pth')


def test_nan_distill_loss_names_the_edge(tmp_path, repo):
    bad = save_detector_checkpoint(TEACHER, tmp_path / 'nan.pth', nan_in='bbox_head.gfl_reg')
    cfg = build_distill_config(str(repo / STUDENT), 'kd_ld_vlr', str(repo / TEACHER), bad)
    with pytest.raises(NonFiniteLossError, match=r"edge\(s\) \['main_ld', 'vlr_ld'\]"):
        train_iterations(cfg, iterations=1, batch_size=2, subset=2)


def test_a_batch_without_gt_gives_zero_distill_losses_and_a_backward(teacher_ckpt, repo):
    """Empty main and VLR regions: every edge is exactly 0 and the step still backpropagates
    (LD used to fail here on ``reshape(0, 4, -1)``)."""
    cfg = build_distill_config(str(repo / STUDENT), 'kd_ld_vlr', str(repo / TEACHER), teacher_ckpt)
    graph, dataset, _ = build_train_parts(cfg, 2)
    items = [dataset[0], dataset[1]]
    for item in items:
        item['data_samples'].gt_instances = item['data_samples'].gt_instances[:0]
    data = graph.data_preprocessor(pseudo_collate(items), True)
    losses = graph(**data, mode='loss')
    for edge in cfg.model.edges:
        assert losses[f'loss_{edge["name"]}'].item() == 0
        assert graph.last_regions[edge['name']].sum() == 0
    total, _ = graph.parse_losses(losses)
    assert torch.isfinite(total)
    total.backward()
    assert graph.architecture.bbox_head.gfl_cls.weight.grad is not None  # QFL on all negatives
