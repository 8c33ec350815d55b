"""mmdet's own heads in the graph: RetinaHead (9 anchors per location), FCOSHead, TOODHead,
RTMDetSepBNHead and plain RTMDetHead as students and teachers under every recipe whose outputs
they have (the head-output recipes, CrossKD where the towers allow it, the feature methods PKD,
CWD, MGD, FGD and BCKD), as teachers of the
GFL student, the refusals that name what is missing, and the graph's reading of RetinaNet's
anchors against mmdet's own flattening. The outputs' values: test_mmdet_heads_outputs.py."""

import re

import pytest
import torch
from mmengine.dataset import pseudo_collate

from distill.build import build_train_parts
from distill.cli.train_distill import build_distill_config
from distill.errors import RecipeError
from distill.graph import PairMismatchError
from distill.graph.edges import read_tap
from distill.graph.outputs import flatten_raw
from tests.helpers import (
    record_outputs,
    runner_epoch,
    save_detector_checkpoint,
    train_checking_edges,
)

RETINA = 'configs/tiny/retina_s_digits.py'
RETINA_L = 'configs/tiny/retina_l_digits.py'
FCOS = 'configs/tiny/fcos_mmdet_s_digits.py'
TOOD = 'configs/tiny/tood_s_digits.py'
RTMDET = 'configs/tiny/rtmdet_s_digits.py'
RTMDET_PLAIN = 'rtmdet_plain_head'  # RTMDET with mmdet's RTMDetHead (no shared convs): made here
GFL_S = 'configs/tiny/gfl_s_digits.py'
HEADS = {RETINA: 'RetinaHead', FCOS: 'FCOSHead', TOOD: 'TOODHead', RTMDET: 'RTMDetSepBNHead',
         RTMDET_PLAIN: 'RTMDetHead'}
# every recipe whose outputs the head has (the teacher: the same config); CrossKD on the
# heads whose towers it can cross; the neck methods (one run for the three) and BCKD
# (cls_logits and boxes) on all
COMMON = ['none', 'kd', 'pkd', 'cwd+mgd+fgd', 'bckd']
RECIPES = {RETINA: COMMON + ['crosskd_retina', 'crosskd_retina_published'],
           FCOS: COMMON + ['crosskd_fcos'], TOOD: COMMON, RTMDET: COMMON,
           RTMDET_PLAIN: COMMON}
OWN_LOSSES = {RETINA: {'loss_cls', 'loss_bbox'},
              FCOS: {'loss_cls', 'loss_bbox', 'loss_centerness'},
              TOOD: {'loss_cls', 'loss_bbox'}, RTMDET: {'loss_cls', 'loss_bbox'},
              RTMDET_PLAIN: {'loss_cls', 'loss_bbox'}}
FEATURE_EDGES = {'pkd', 'cwd', 'mgd', 'fgd'}


@pytest.fixture(scope='module')
def configs(tmp_path_factory, repo):
    """Each name's config file: the shipped tiny configs, and the tiny RTMDet with mmdet's plain
    RTMDetHead (its own convs per level) in place of RTMDetSepBNHead."""
    plain = tmp_path_factory.mktemp('c') / 'rtmdet_plain_head.py'
    plain.write_text(
        f"_base_ = '{repo / RTMDET}'\n"
        "model = dict(bbox_head=dict(_delete_=True, type='RTMDetHead', num_classes=10,\n"
        "    in_channels=48, stacked_convs=2, feat_channels=48,\n"
        "    anchor_generator=dict(type='MlvlPointGenerator', offset=0, strides=[8, 16, 32]),\n"
        "    bbox_coder=dict(type='DistancePointBBoxCoder'),\n"
        "    loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),\n"
        "    loss_bbox=dict(type='GIoULoss', loss_weight=2.0), with_objectness=False,\n"
        "    norm_cfg=dict(type='BN'), act_cfg=dict(type='SiLU', inplace=True)))\n")
    return lambda name: str(plain) if name == RTMDET_PLAIN else str(repo / name)


@pytest.fixture(autouse=True)
def epoch():
    """TOOD reads the epoch from mmengine's MessageHub (a Runner sets it); restored after."""
    with runner_epoch() as set_epoch:
        yield set_epoch


@pytest.fixture(scope='module')
def teachers(tmp_path_factory, repo):
    """Each config's detector (seed 1) saved as a teacher checkpoint, made on first use."""
    made = {}

    def get(config):
        if config not in made:
            path = tmp_path_factory.mktemp('t') / 'teacher.pth'
            made[config] = save_detector_checkpoint(str(repo / config), path, seed=1)
        return made[config]
    return get


def _train(cfg):
    return train_checking_edges(cfg)


@pytest.mark.parametrize('student, recipe', [(s, r) for s, rs in RECIPES.items() for r in rs],
                         ids=[f'{HEADS[s]}-{r}' for s, rs in RECIPES.items() for r in rs])
def test_mmdet_head_student_trains_under_every_recipe_it_has_outputs_for(student, recipe,
                                                                         teachers, configs):
    path = configs(student)
    cfg = build_distill_config(path, recipe, path, teachers(path))
    seen, touched = _train(cfg)
    assert OWN_LOSSES[student] <= set(seen)
    names = [e['name'] for e in cfg.model.edges]
    if names:
        assert any(seen[f'loss_{n}'] > 0 for n in names)
    assert all(seen[f'loss_{n}'] > 0 for n in FEATURE_EDGES.intersection(names)), seen
    # the same widths: no adapter; everything else trained is the student, or the modules of
    # MGD's generation and FGD's relation blocks (edge_losses.*, not exported)
    assert all(n.startswith('architecture.') or n.split('.')[:2] in (['edge_losses', 'mgd'],
                                                                     ['edge_losses', 'fgd'])
               for n in touched)
    assert recipe != 'cwd+mgd+fgd' or any(n.startswith('edge_losses.mgd') for n in touched)
    if 'bckd' in recipe:  # BCKD's two edges: the class one is dense, so always > 0
        assert seen['loss_bckd_cls'] > 0


@pytest.mark.parametrize('teacher', [FCOS, TOOD, RTMDET])
def test_gfl_student_learns_from_an_mmdet_head_teacher(teacher, teachers, repo):
    cfg = build_distill_config(str(repo / GFL_S), 'kd+pkd', str(repo / teacher),
                               teachers(teacher))
    seen, _ = _train(cfg)
    assert seen['loss_main_kd'] > 0 and seen['loss_pkd'] > 0


def test_retinanet_teaches_a_gfl_student_its_features_not_its_anchors(teachers, repo):
    """9 anchors per location against GFL's one: the neck's maps can be distilled (PKD), the
    class logits cannot be paired prior by prior (refused, naming both numbers)."""
    cfg = build_distill_config(str(repo / GFL_S), 'pkd', str(repo / RETINA), teachers(RETINA))
    seen, _ = _train(cfg)
    assert seen['loss_pkd'] > 0
    cfg = build_distill_config(str(repo / GFL_S), 'kd', str(repo / RETINA), teachers(RETINA))
    with pytest.raises(PairMismatchError, match=r'priors per location .* is 1 in student '
                                                r'.*gfl_s_digits\.py vs 9 in teacher '
                                                r'.*retina_s_digits\.py but must be equal'):
        build_train_parts(cfg, 2)


@pytest.mark.parametrize('student', list(HEADS))
def test_a_recipe_needing_an_output_the_head_lacks_names_it(student, teachers, configs):
    from distill.graph.algorithm import DistillGraph  # noqa: F401 (registers the graph)
    head = HEADS[student]
    path = configs(student)
    cfg = build_distill_config(path, 'ld', path, teachers(path))
    with pytest.raises(RecipeError, match=rf"needs the output 'box_dist' of the student head, "
                                          rf"which {head} \(outputs: .*\) \(.*{re.escape(path)}\)"):
        build_train_parts(cfg, 2)
    if student != FCOS:  # FCOS has a centerness branch; the others none
        cfg = build_distill_config(path, 'crosskd_atss', path, teachers(path))
        with pytest.raises(RecipeError, match=rf"'centerness' of the teacher head, which "
                                              rf"{head}"):
            build_train_parts(cfg, 2)
    # DDOD's CrossKD reads the IoU branch, which none of mmdet's heads here has
    cfg = build_distill_config(path, 'crosskd_ddod', path, teachers(path))
    with pytest.raises(RecipeError, match=rf"'iou' of the teacher head, which {head}"):
        build_train_parts(cfg, 2)


@pytest.mark.parametrize('student, teacher', [(TOOD, TOOD), (RTMDET, RTMDET), (GFL_S, RTMDET),
                                              (GFL_S, TOOD)])
def test_crosskd_refuses_tood_and_rtmdet_in_one_line_naming_both_heads(student, teacher,
                                                                      teachers, repo):
    from distill.graph.algorithm import DistillGraph  # noqa: F401 (registers the graph)
    cfg = build_distill_config(str(repo / student), 'crosskd_fcos', str(repo / teacher),
                               teachers(teacher))
    with pytest.raises(RecipeError) as err:
        build_train_parts(cfg, 2)
    msg = str(err.value)
    s_head = 'GFLHead' if student == GFL_S else HEADS[student]
    assert '\n' not in msg
    assert f'cannot cross {s_head} (' in msg and f') into {HEADS[teacher]} (' in msg, msg
    assert f'head {HEADS[teacher]} is not one the graph can cross' in msg
    assert 'RetinaHead' in msg and 'FCOSHead' in msg and 'TOODHead' not in msg.split('crosses')[1]


def test_crosskd_refuses_different_anchors_per_location(teachers, tmp_path, repo):
    """A cross path gives the teacher's priors, the regions are the student's: the same A."""
    from distill.graph.algorithm import DistillGraph  # noqa: F401 (registers the graph)
    config = tmp_path / 'retina_3.py'
    config.write_text(f"_base_ = '{repo / RETINA}'\nmodel = dict(bbox_head=dict("
                      "anchor_generator=dict(scales_per_octave=1)))\n")
    ckpt = save_detector_checkpoint(str(config), tmp_path / 't.pth')
    cfg = build_distill_config(str(repo / RETINA), 'crosskd_retina', str(config), ckpt)
    with pytest.raises(PairMismatchError, match=r'priors per location .* is 9 in student .* vs '
                                                r'3 in teacher'):
        build_train_parts(cfg, 2)
    # with a feature edge besides, the pair check leaves the priors to the cross path
    cfg = build_distill_config(str(repo / RETINA), 'pkd+crosskd_retina', str(config), ckpt)
    with pytest.raises(RecipeError, match=r'cannot cross RetinaHead \(.*\) into RetinaHead '
                                          r'\(.*retina_3\.py\): the student has 9 priors per '
                                          r'location, the teacher 3'):
        build_train_parts(cfg, 2)


def test_graph_reads_retinanet_anchors_in_mmdets_order(teachers, repo):
    """Through the graph: KD's main region (the student's positives weighted by its max class
    probability) equals the one built from mmdet's own labels and permute/reshape."""
    cfg = build_distill_config(str(repo / RETINA), 'kd', str(repo / RETINA), teachers(RETINA))
    graph, dataset, _ = build_train_parts(cfg, 2)
    head = graph.architecture.bbox_head
    outs, targets = record_outputs(head, 'forward'), record_outputs(head, 'get_targets')
    data = graph.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), True)
    losses = graph.loss(**data)
    cls = outs[-1][0]
    flat = torch.cat([m.permute(0, 2, 3, 1).reshape(len(m), -1, 10) for m in cls], 1)
    labels = torch.cat(targets[-1][0], 1)
    pos = (labels >= 0) & (labels < 10)
    assert pos.any() and flat.shape[1] == 9 * sum(m.shape[-2] * m.shape[-1] for m in cls)
    want = pos * flat.detach().sigmoid().amax(-1)
    torch.testing.assert_close(graph.last_regions['main_kd'], want, rtol=0, atol=0)
    assert torch.isfinite(losses['loss_main_kd']) and losses['loss_main_kd'] > 0


def test_published_crosskd_retina_regions_are_mmdets_label_weights(teachers, repo):
    """crosskd_retina_published: the class edge keeps the anchors mmdet's RetinaHead does not
    ignore (its own get_targets' label weights > 0), the box edge the teacher's max class
    probability there and 0 on the ignored anchors (some are ignored in this batch)."""
    cfg = build_distill_config(str(repo / RETINA), 'crosskd_retina_published', str(repo / RETINA),
                               teachers(RETINA))
    graph, dataset, _ = build_train_parts(cfg, 2)
    targets = record_outputs(graph.architecture.bbox_head, 'get_targets')
    t_outs = record_outputs(graph.teacher.bbox_head, 'forward')
    data = graph.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), True)
    losses = graph.loss(**data)
    weights = torch.cat(targets[-1][1], 1)
    kept = (weights > 0).float()
    assert (weights == 0).any() and (weights > 0).any()
    torch.testing.assert_close(graph.last_regions['crosskd_cls'], kept, rtol=0, atol=0)
    cls = t_outs[-1][0]
    flat = torch.cat([m.permute(0, 2, 3, 1).reshape(len(m), -1, 10) for m in cls], 1)
    torch.testing.assert_close(graph.last_regions['crosskd_giou'],
                               kept * flat.sigmoid().amax(-1), rtol=0, atol=0)
    assert all(torch.isfinite(losses[k]) for k in ('loss_crosskd_cls', 'loss_crosskd_giou'))


def test_region_reading_label_weights_is_refused_on_a_head_without_them(teachers, repo):
    """GFLHead declares no label weights (ATSS ignores no anchor): one line naming both."""
    cfg = build_distill_config(str(repo / GFL_S), 'kd', str(repo / GFL_S), teachers(GFL_S))
    cfg.model.edges[0]['region'] = dict(type='AssignedRegion')
    with pytest.raises(RecipeError) as err:
        build_train_parts(cfg, 2)
    msg = str(err.value)
    assert '\n' not in msg
    assert "region AssignedRegion() needs the student head's output 'label_weights'" in msg
    assert 'GFLHead (outputs: ' in msg and 'gfl_s_digits.py' in msg, msg


def test_raw_head_tap_reference_reads_retinanet_anchors_as_the_named_output(teachers, repo):
    """An edge on ``dict(tap='head', index=0)`` (RetinaNet: 9 x 10 channels per location) gives
    the same rows, hence the same KD loss, as ``output='cls_logits'``; a raw reference to the
    assignment tap reads its per-level targets as rows too."""
    losses = []
    for ref in (dict(output='cls_logits'), dict(tap='head', index=0)):
        cfg = build_distill_config(str(repo / RETINA), 'kd', str(repo / RETINA),
                                   teachers(RETINA))
        cfg.model.edges[0]['student'], cfg.model.edges[0]['teacher'] = dict(ref), dict(ref)
        graph, dataset, _ = build_train_parts(cfg, 2, 0)
        data = graph.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), True)
        losses.append(graph.loss(**data)['loss_main_kd'])
        if 'tap' in ref:
            raw = read_tap(graph.student_recorders, dict(tap='assign', index=0))
            rows = flatten_raw(raw, graph.student_recorders, 'assign', graph.architecture.bbox_head)
            assert rows.shape == graph.last_regions['main_kd'].shape
            torch.testing.assert_close((rows >= 0) & (rows < 10),
                                       graph.last_regions['main_kd'] > 0)
    assert losses[0] > 0
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)


@pytest.mark.parametrize('recipe', ['kd', 'pkd', 'crosskd_retina', 'crosskd_retina_published'])
def test_retinanet_pair_of_two_widths_trains(teachers, repo, recipe):
    """The RetinaNet pair (teacher: 96 channels, 4 tower convs; student: 48, 2): the same 9
    anchors, so KD and CrossKD read them row for row; adapters bridge the widths."""
    cfg = build_distill_config(str(repo / RETINA), recipe, str(repo / RETINA_L),
                               teachers(RETINA_L))
    seen, _ = _train(cfg)
    assert all(seen[f'loss_{edge["name"]}'] > 0 for edge in cfg.model.edges), seen
