"""Two-stage detectors as nodes of feature edges: the tiny Faster R-CNN (``rpn_head``,
``roi_head``, no dense ``bbox_head``, FPN of 64 channels) as the student of the tiny GFL
teacher (96) and as the teacher of the tiny GFL student (48), under pkd, cwd, mgd and fgd: real
steps whose edge losses equal the losses computed by hand on the recorded neck maps; the
head-output recipes refused naming the output and the model; the export to plain mmdet."""

import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from distill.build import build_train_parts
from distill.cli.train_distill import build_distill_config
from distill.errors import RecipeError
from distill.graph import PairMismatchError, check_pair
from distill.graph.edges import read_tap
from distill.graph.nodes import location_priors, map_strides
from distill.losses.mgd import draw_masks
from distill.regions.base import pad_per_image
from distill.regions.fgd import fgd_foreground
from tests.helpers import (
    record_outputs,
    save_detector_checkpoint,
    teacher_checker,
    train_iterations,
)

FASTER = 'configs/tiny/faster_rcnn_s_digits.py'
GFL_S, GFL_L = 'configs/tiny/gfl_s_digits.py', 'configs/tiny/gfl_l_digits.py'


@pytest.fixture(scope='module')
def gfl_teacher(tmp_path_factory):
    return save_detector_checkpoint(GFL_L, tmp_path_factory.mktemp('t') / 'gfl_l.pth', 1)


@pytest.fixture(scope='module')
def faster_teacher(tmp_path_factory):
    return save_detector_checkpoint(FASTER, tmp_path_factory.mktemp('t') / 'faster.pth', 1)


@pytest.fixture(autouse=True)
def _scope():
    init_default_scope('mmdet')


def _necks(model):
    """The step's recorded neck maps: student (list[Tensor[B, C_s, H, W]]) and teacher."""
    return (list(read_tap(model.student_recorders, dict(tap='neck'))),
            list(read_tap(model.teacher_recorders, dict(tap='neck'))))


def _pearson(student, teacher):
    """PKD by hand: per level, each channel standardised over batch and positions (unbiased
    std + 1e-6), half the mean squared difference; summed over the levels."""
    total = 0.0
    for s, t in zip(student, teacher):
        z = [(x - x.mean((0, 2, 3), keepdim=True)) / (x.std((0, 2, 3), keepdim=True) + 1e-6)
             for x in (s, t)]
        total += float(((z[0] - z[1]) ** 2).mean()) / 2
    return total


def _cwd(student, teacher, tau=1.0):
    """CWD by hand: KL of each channel's spatial softmax, tau^2 / (B C), summed over levels."""
    total = 0.0
    for s, t in zip(student, teacher):
        b, c = s.shape[:2]
        log_t, log_s = ((x.flatten(2) / tau).log_softmax(-1) for x in (t, s))
        total += float((log_t.exp() * (log_t - log_s)).sum()) * tau ** 2 / (b * c)
    return total


def _teacher_state_kept(model, ckpt):
    loaded = torch.load(ckpt, weights_only=True)['state_dict']
    state = model.teacher.state_dict()
    assert state.keys() == loaded.keys()
    for k, v in loaded.items():  # weights and BN statistics: the teacher did not move
        assert torch.equal(state[k], v), k


def _feature_cfg(student, teacher, ckpt, repo, recipe='pkd+cwd+mgd+fgd'):
    # MGD's and FGD's widths: None in the recipes, read from the teacher's neck (96 or 64, P3-P5)
    return build_distill_config(str(repo / student), recipe, str(repo / teacher), ckpt)


def test_faster_rcnn_student_learns_a_gfl_teachers_features(gfl_teacher, repo):
    """pkd, cwd, mgd and fgd in one run: the student records only its neck, the teacher runs
    only extract_feat, and each edge's loss is the hand computation on the recorded maps
    (through the trained 64 -> 96 adapter), FGD's foreground built by hand from the GT boxes
    on the neck's cells (strides 8, 16, 32, the cell centres at (col + 0.5) s)."""
    cfg = _feature_cfg(FASTER, GFL_L, gfl_teacher, repo)
    seen, steps = {}, []
    check = teacher_checker(seen)

    def on_step(model, log_vars):
        check(model, log_vars)
        steps.append(dict(log_vars))
        if len(steps) == 1:  # watch the second step
            model.watch = dict(head=record_outputs(model.teacher.bbox_head, 'forward'))
            original = model._edge_losses

            def keep_samples(data_samples):
                model.watch['data_samples'] = data_samples
                return original(data_samples)
            model._edge_losses = keep_samples
            model.edge_losses['mgd'].register_forward_pre_hook(
                lambda *_: model.watch.__setitem__('rng', torch.get_rng_state()))
            return
        assert model.watch['head'] == []  # the teacher's head did not run
        assert set(model.student_recorders.recorders) == {'neck'}
        assert set(model.teacher_taps) == {'neck'}
        with torch.no_grad():
            s, t = _necks(model)
            assert [x.shape[1] for x in s] == [64] * 3 and [x.shape[1] for x in t] == [96] * 3
            s = [model.adapters['neck'](x) for x in s]
            assert float(log_vars['loss_pkd']) == pytest.approx(6.0 * _pearson(s, t), rel=1e-5)
            assert float(log_vars['loss_cwd']) == pytest.approx(10.0 * _cwd(s, t), rel=1e-5)
            now = torch.get_rng_state()
            torch.set_rng_state(model.watch['rng'])
            masks = draw_masks(s, 0.65)
            torch.set_rng_state(now)
            gens = model.edge_losses['mgd'].generation
            mgd = sum(float(((g(x * m) - y) ** 2).sum()) / len(x)
                      for g, x, m, y in zip(gens, s, masks, t))
            assert float(log_vars['loss_mgd']) == pytest.approx(2e-5 * mgd, rel=1e-5)
            gts, valid = pad_per_image(
                [d.gt_instances.bboxes for d in model.watch['data_samples']], s[0])
            fg = []
            for x, stride in zip(s, (8, 16, 32)):
                h, w = x.shape[-2:]
                rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
                centres = torch.stack([cols, rows], -1).reshape(-1, 2).float() * stride
                centres += stride / 2
                fg.append(fgd_foreground(torch.cat([centres, centres], -1), stride, gts, valid)
                          .reshape(len(x), 1, h, w))
            region = model.last_regions['fgd']
            assert torch.equal(region, torch.cat([f.flatten(1) for f in fg], 1))
            assert (region > 0).any() and (region == 0).any()
            fgd = model.edge_losses['fgd'](s, t, weight=fg)
            assert float(log_vars['loss_fgd']) == pytest.approx(float(fgd), rel=1e-5)
        seen['model'] = model

    losses, touched = train_iterations(cfg, iterations=2, batch_size=2, subset=4,
                                       on_step=on_step)
    assert len(steps) == 2 and all(torch.isfinite(torch.tensor(losses)))
    for name in ('pkd', 'cwd', 'mgd', 'fgd'):
        assert all(0 < step[f'loss_{name}'] < float('inf') for step in steps), name
    # the two-stage student's own losses are trained alongside
    assert {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'} <= set(steps[0])
    assert touched['adapters.neck.weight'] and touched['architecture.neck.fpn_convs.0.conv.weight']
    assert all(not n.startswith('teacher') for n in touched)
    _teacher_state_kept(seen['model'], gfl_teacher)


def test_gfl_student_learns_a_faster_rcnn_teachers_features(faster_teacher, repo):
    """pkd from the two-stage teacher (64 channels) into the GFL student (48): the adapter
    maps 48 -> 64, the student's regions come from its own head, the teacher runs only
    extract_feat."""
    cfg = _feature_cfg(GFL_S, FASTER, faster_teacher, repo, recipe='pkd')
    seen, values = {}, []
    check = teacher_checker(seen)

    def on_step(model, log_vars):
        check(model, log_vars)
        assert set(model.student_recorders.recorders) == {'head', 'assign', 'neck'}
        assert set(model.teacher_taps) == {'neck'}
        assert model.adapters['neck'].weight.shape == (64, 48, 1, 1)
        with torch.no_grad():
            s, t = _necks(model)
            s = [model.adapters['neck'](x) for x in s]
            values.append((float(log_vars['loss_pkd']), 6.0 * _pearson(s, t)))
            region = model.last_regions['pkd']
            assert region.shape == (2, sum(x.shape[-2] * x.shape[-1] for x in s))
            assert bool((region == 1).all())
        seen['model'] = model

    losses, touched = train_iterations(cfg, iterations=2, batch_size=2, subset=4,
                                       on_step=on_step)
    assert all(torch.isfinite(torch.tensor(losses))) and len(values) == 2
    for logged, by_hand in values:
        assert 0 < logged == pytest.approx(by_hand, rel=1e-5)
    assert touched['adapters.neck.weight']
    _teacher_state_kept(seen['model'], faster_teacher)


@pytest.mark.parametrize('recipe, edge, output', [
    ('kd', 'main_kd', 'cls_logits'), ('ld', 'main_ld', 'box_dist'),
    ('kd_ld_vlr', 'main_kd', 'cls_logits'), ('crosskd', 'crosskd_cls', 'cls_logits')])
def test_head_output_recipes_are_refused_on_a_two_stage_student(recipe, edge, output,
                                                                 gfl_teacher, repo):
    cfg = build_distill_config(str(repo / FASTER), recipe, str(repo / GFL_L), gfl_teacher)
    with pytest.raises(RecipeError) as err:
        build_train_parts(cfg, 1)
    msg = str(err.value)
    assert '\n' not in msg
    assert msg.startswith(f'{cfg.model.edges_source}: FasterRCNN has no bbox_head: the edge '
                          f'{edge!r} reads {output!r} of the student ({repo / FASTER})'), msg
    assert 'it has rpn_head, roi_head' in msg and "output='neck'" in msg


@pytest.mark.parametrize('recipe, edge, output', [
    ('kd', 'main_kd', 'cls_logits'), ('crosskd', 'crosskd_cls', 'cls_logits')])
def test_head_output_recipes_are_refused_on_a_two_stage_teacher(recipe, edge, output,
                                                                faster_teacher, repo):
    cfg = build_distill_config(str(repo / GFL_S), recipe, str(repo / FASTER), faster_teacher)
    with pytest.raises(RecipeError) as err:
        build_train_parts(cfg, 1)
    msg = str(err.value)
    assert '\n' not in msg
    assert (f'FasterRCNN has no bbox_head: the edge {edge!r} reads {output!r} of the teacher '
            f'({repo / FASTER})') in msg, msg


@pytest.mark.parametrize('side, region, needs', [
    ('student', dict(type='MainRegion'), "the student head's label assignment and class scores"),
    ('student', dict(type='VLRRegion'),
     "the student head's prior boxes, label assignment and class scores"),
    ('teacher', dict(type='TeacherScoreRegion'), "the teacher head's class scores")])
def test_regions_that_need_a_dense_head_are_refused(side, region, needs, gfl_teacher,
                                                    faster_teacher, repo):
    student, teacher, ckpt = ((FASTER, GFL_L, gfl_teacher) if side == 'student'
                              else (GFL_S, FASTER, faster_teacher))
    cfg = build_distill_config(str(repo / student), 'pkd', str(repo / teacher), ckpt)
    cfg.model.edges[0]['region'] = region
    with pytest.raises(RecipeError) as err:
        build_train_parts(cfg, 1)
    msg = str(err.value)
    assert '\n' not in msg and msg.startswith(f'{cfg.model.edges_source}: edge \'pkd\': region '
                                              f'{region["type"]}'), msg
    assert (f'needs {needs}, but FasterRCNN ({repo / FASTER}) has no bbox_head (it has '
            f'rpn_head, roi_head)') in msg


def test_gt_box_region_runs_on_the_neck_cells(gfl_teacher, repo):
    """GTBoxRegion needs only locations: on the two-stage student, the cells whose centre lies
    inside a GT box."""
    cfg = build_distill_config(str(repo / FASTER), 'pkd', str(repo / GFL_L), gfl_teacher)
    cfg.model.edges[0]['region'] = dict(type='GTBoxRegion')
    model, dataset, _ = build_train_parts(cfg, 2)
    data = model.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), True)
    losses = model(**data, mode='loss')
    assert torch.isfinite(losses['loss_pkd'])
    region = model.last_regions['pkd']
    maps = _necks(model)[0]
    for i, sample in enumerate(data['data_samples']):
        inside = []
        for x, stride in zip(maps, (8, 16, 32)):
            h, w = x.shape[-2:]
            cy, cx = ((torch.arange(n) + 0.5) * stride for n in (h, w))
            cell = torch.zeros(h, w, dtype=torch.bool)
            for box in sample.gt_instances.bboxes:
                cell |= ((cx[None] > box[0]) & (cx[None] < box[2])
                         & (cy[:, None] > box[1]) & (cy[:, None] < box[3]))
            inside.append(cell.flatten())
        inside = torch.cat(inside)
        assert inside.any() and not inside.all()
        assert torch.equal(region[i], inside.float())


def test_pair_check_pairs_necks_and_names_fields(gfl_teacher, repo):
    cfg = build_distill_config(str(repo / FASTER), 'pkd', str(repo / GFL_L), gfl_teacher)
    cfg.model.teacher.bbox_head.anchor_generator.strides = [8, 16, 64]
    cfg.model.teacher.data_preprocessor.mean = [0.0, 0.0, 0.0]
    with pytest.raises(PairMismatchError) as err:
        build_train_parts(cfg, 1)
    msg = str(err.value)
    assert '\n' not in msg
    assert (f'model.rpn_head.anchor_generator.strides is [(8, 8), (16, 16), (32, 32)] in '
            f'student {repo / FASTER} vs model.bbox_head.anchor_generator.strides [(8, 8), '
            f'(16, 16), (64, 64)] in teacher {repo / GFL_L}') in msg, msg
    assert (f'model.data_preprocessor.mean is (123.675, 116.28, 103.53) in student '
            f'{repo / FASTER} vs (0.0, 0.0, 0.0) in teacher {repo / GFL_L}') in msg, msg
    # built models: necks pair, a head output does not
    faster, gfl = (build_train_parts(build_distill_config(str(repo / c), 'none'), 1)[0]
                   .architecture for c in (FASTER, GFL_L))
    assert check_pair(faster, gfl, 'f.py', 'g.py', outputs={'neck'}) is None
    assert check_pair(gfl, faster, 'g.py', 'f.py', outputs={'neck'}) is None
    with pytest.raises(PairMismatchError, match="or only feature edges .output='neck'"):
        check_pair(faster, gfl, 'f.py', 'g.py', outputs={'neck', 'cls_logits'})


def test_neck_strides_and_cell_priors(gfl_teacher, repo):
    """The strides of a head-less detector's neck: its RPN's, else the padded batch over the
    map size (to a power of two: P6 of an odd P5 is a cell short)."""
    faster = build_train_parts(build_distill_config(str(repo / FASTER), 'none'), 1)[0]
    maps = [torch.zeros(1, 4, 32 // 2 ** i, 28 // 2 ** i) for i in range(3)]
    assert map_strides(faster.architecture, maps, None) == [(8, 8), (16, 16), (32, 32)]
    bare = torch.nn.Module()  # no RPN
    odd = maps + [torch.zeros(1, 4, 4, 4)]  # P6 of a 7-wide P5
    assert map_strides(bare, odd, (256, 224)) == [(8, 8), (16, 16), (32, 32), (64, 64)]
    with pytest.raises(ValueError, match='no RPN anchor strides and the batch has no '
                                         'batch_input_shape'):
        map_strides(bare, odd, None)
    priors = location_priors(faster.architecture, maps, None, 8.0, {})
    assert [len(p) for p in priors] == [32 * 28, 16 * 14, 8 * 7]
    # cell (row 0, col 1) of P3 is centred at (12, 4); the square is 8 strides wide
    assert priors[0][1].tolist() == [12 - 32, 4 - 32, 12 + 32, 4 + 32]
    assert priors[2][7].tolist() == [16 - 128, 48 - 128, 16 + 128, 48 + 128]


@pytest.mark.parametrize('recipe', ['pkd', 'cwd', 'mgd', 'fgd'])
def test_two_stage_student_trains_and_exports_to_plain_mmdet(recipe, gfl_teacher, tmp_path,
                                                              repo):
    """Each feature method on its own: a step whose edge loss is positive and finite, then the
    run's checkpoint (student, 64 -> 96 adapter; MGD's generation blocks, FGD's relation
    blocks) exported: a plain FasterRCNN checkpoint and config that mmdet's init_detector
    loads, without the graph's modules, predicting exactly as the graph's student."""
    from mmdet.apis import init_detector

    from distill.export import export_student

    cfg = build_distill_config(str(repo / FASTER), recipe, str(repo / GFL_L), gfl_teacher)
    model, dataset, optim = build_train_parts(cfg, 2)
    batch = pseudo_collate([dataset[0], dataset[1]])
    losses = model(**model.data_preprocessor(batch, True), mode='loss')
    assert 0 < float(losses[f'loss_{recipe}']) < float('inf')
    assert {'loss_rpn_cls', 'loss_cls', 'loss_bbox'} <= set(losses)
    loss, _ = model.parse_losses(losses)
    optim.update_params(loss)  # one step: the weights are no longer the init
    run_cfg, ckpt = tmp_path / 'run.py', tmp_path / 'iter_1.pth'
    cfg.dump(str(run_cfg))
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    out_ckpt, out_cfg = export_student(str(run_cfg), str(ckpt), str(tmp_path / 'student'))
    state = torch.load(out_ckpt, weights_only=True)['state_dict']
    graph_state = model.state_dict()
    assert 'adapters.neck.weight' in graph_state
    # the modules of the loss are trained with the run and left out of the export
    assert any(k.startswith('edge_losses.') for k in graph_state) == (recipe in ('mgd', 'fgd'))
    assert state.keys() == {k[len('architecture.'):] for k in graph_state
                            if k.startswith('architecture.')}
    assert all(torch.equal(v, graph_state[f'architecture.{k}']) for k, v in state.items())
    exported = init_detector(out_cfg, out_ckpt, device='cpu')
    assert type(exported).__name__ == 'FasterRCNN' and 'distill' not in exported.cfg
    model.eval()
    with torch.no_grad():  # each its own batch: predict writes into the data samples
        ours = model.architecture(**model.data_preprocessor(
            pseudo_collate([dataset[0], dataset[1]]), False), mode='predict')
        theirs = exported(**exported.data_preprocessor(
            pseudo_collate([dataset[0], dataset[1]]), False), mode='predict')
    assert sum(len(p.pred_instances) for p in ours) > 0
    for a, b in zip(ours, theirs):
        for key in ('bboxes', 'scores', 'labels'):
            assert torch.equal(a.pred_instances[key], b.pred_instances[key]), key
