"""DDOD and MOD in the graph: students under every recipe (with their general-distribution
option), teachers of a GFL student, the refusal that names the option, and the anchor-free
VLR of an FCOS/MOD student from the LD paper's preset square anchors (a hand-built case)."""

import math

import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.structures import InstanceData

from distill.build import build_train_parts
from distill.cli.train_distill import build_distill_config
from distill.errors import RecipeError
from tests.helpers import save_detector_checkpoint, teacher_checker, train_iterations

DDOD = 'configs/tiny/ddod_s_digits.py'
MOD = 'configs/tiny/mod_s_digits.py'
ATSS = 'configs/tiny/atss_s_digits.py'
GFL_S = 'configs/tiny/gfl_s_digits.py'
GFL_L = 'configs/tiny/gfl_l_digits.py'
DIST = {'model.bbox_head.box_dist': 16}
ATSS_DIST = {'model.bbox_head.type': 'ATSSDistHead', **DIST}
MOD_GFL = 'configs/tiny/mod_gfl_s_digits.py'  # GFL's distributions already
OPTIONS = {DDOD: DIST, MOD: DIST, ATSS: ATSS_DIST, MOD_GFL: None}
QUALITY = {DDOD: 'loss_iou', MOD: 'loss_iou', ATSS: 'loss_centerness', MOD_GFL: 'loss_cls'}


@pytest.fixture(scope='module')
def gfl_teacher(tmp_path_factory, repo):
    return save_detector_checkpoint(str(repo / GFL_L), tmp_path_factory.mktemp('t') / 'gfl.pth')


def _dist_config(tmp_path, repo, config):
    path = tmp_path / f'{config.rsplit("/", 1)[-1][:-3]}_dist.py'
    path.write_text(f"_base_ = '{repo / config}'\nmodel = dict(bbox_head=dict(box_dist=16))\n")
    return str(path)


@pytest.mark.parametrize('recipe', ['none', 'kd', 'ld', 'ld_vlr', 'kd_ld_vlr', 'ld_published',
                                    'ld_vlr_published'])
@pytest.mark.parametrize('student', [DDOD, MOD, ATSS, MOD_GFL])
def test_student_with_box_dist_trains_under_every_recipe(student, recipe, gfl_teacher, repo):
    cfg = build_distill_config(str(repo / student), recipe, str(repo / GFL_L), gfl_teacher,
                               cfg_options=OPTIONS[student])
    seen = {}
    losses, touched = train_iterations(cfg, iterations=3, batch_size=2, subset=6,
                                       on_step=teacher_checker(seen))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(touched.values()), [n for n, t in touched.items() if not t]
    assert {'loss_cls', 'loss_bbox', QUALITY[student], 'loss_dfl'} <= set(seen)
    for edge in cfg.model.edges:
        assert 0 <= seen[f'loss_{edge["name"]}'] < float('inf')


@pytest.mark.parametrize('teacher', [DDOD, MOD])
def test_gfl_student_learns_from_a_ddod_or_mod_teacher(teacher, tmp_path, repo):
    config = _dist_config(tmp_path, repo, teacher)
    ckpt = save_detector_checkpoint(config, tmp_path / 'teacher.pth')
    cfg = build_distill_config(str(repo / GFL_S), 'kd_ld_vlr', config, ckpt)
    seen = {}
    losses, touched = train_iterations(cfg, iterations=2, batch_size=2, subset=4,
                                       on_step=teacher_checker(seen))
    assert all(torch.isfinite(torch.tensor(losses))) and all(touched.values())
    assert all(seen[f'loss_{e}'] > 0 for e in ('main_kd', 'main_ld', 'vlr_ld'))


@pytest.mark.parametrize('config', [DDOD, MOD])
def test_a_head_of_deltas_is_refused_with_the_option_to_turn_on(config, gfl_teacher, tmp_path,
                                                                repo):
    from distill.graph.algorithm import DistillGraph  # noqa: F401 (registers the graph)
    cfg = build_distill_config(str(repo / config), 'ld', str(repo / GFL_L), gfl_teacher)
    with pytest.raises(RecipeError, match=r"needs the output 'box_dist' of the student head.*"
                       r"predicts box deltas.*model\.bbox_head\.box_dist=16 in "
                       r".*(ddod|mod)_s_digits\.py \(or --cfg-options"):
        build_train_parts(cfg, 2)
    # as a teacher: the same, naming the teacher config and asking for a checkpoint
    ckpt = save_detector_checkpoint(str(repo / config), tmp_path / 'deltas.pth')
    cfg = build_distill_config(str(repo / GFL_S), 'ld', str(repo / config), ckpt)
    with pytest.raises(RecipeError, match=r"'box_dist' of the teacher head.*box_dist=16 in "
                       r".*_s_digits\.py, and a checkpoint trained with it"):
        build_train_parts(cfg, 2)


def _square_vlr(points_per_level, strides, scale, gt, gamma=0.25, topk=9):
    """Algorithm 1 of the LD paper by hand, one GT: the preset square of side scale x stride
    at each location, ATSS's threshold from the topk nearest per level, DIoU band."""
    priors = []
    for pts, s in zip(points_per_level, strides):
        half = scale * s / 2
        priors += [(x - half, y - half, x + half, y + half, x, y) for x, y in pts]

    def iou_diou(p):
        iw = max(0.0, min(p[2], gt[2]) - max(p[0], gt[0]))
        ih = max(0.0, min(p[3], gt[3]) - max(p[1], gt[1]))
        inter = iw * ih
        union = (p[2] - p[0]) * (p[3] - p[1]) + (gt[2] - gt[0]) * (gt[3] - gt[1]) - inter
        iou = inter / union
        cx, cy = (gt[0] + gt[2]) / 2, (gt[1] + gt[3]) / 2
        ex = max(p[2], gt[2]) - min(p[0], gt[0])
        ey = max(p[3], gt[3]) - min(p[1], gt[1])
        return iou, iou - ((p[4] - cx) ** 2 + (p[5] - cy) ** 2) / (ex ** 2 + ey ** 2)

    values = [iou_diou(p) for p in priors]
    gc = ((gt[0] + gt[2]) / 2, (gt[1] + gt[3]) / 2)
    cand, start = [], 0
    for pts in points_per_level:
        idx = range(start, start + len(pts))
        near = sorted(idx, key=lambda i: (priors[i][4] - gc[0]) ** 2 + (priors[i][5] - gc[1]) ** 2)
        cand += [values[i][0] for i in near[:topk]]
        start += len(pts)
    mean = sum(cand) / len(cand)
    alpha = mean + math.sqrt(sum((c - mean) ** 2 for c in cand) / (len(cand) - 1))
    return [gamma * alpha <= d <= alpha for _, d in values], alpha


def test_anchor_free_student_vlr_uses_the_preset_square_anchors(gfl_teacher, repo):
    cfg = build_distill_config(str(repo / MOD), 'ld_vlr', str(repo / GFL_L), gfl_teacher,
                               cfg_options=DIST)
    cfg.model.anchor_free_scale = 2.0  # the tiny anchors' octave_base_scale
    graph, dataset, _ = build_train_parts(cfg, 1)
    batch = pseudo_collate([dataset[0]])
    gt = (13.3, 17.1, 47.9, 61.7)  # off the grid: no ties among the nearest locations
    batch['data_samples'][0].gt_instances = InstanceData(bboxes=torch.tensor([gt]),
                                                         labels=torch.tensor([3]))
    data = graph.data_preprocessor(batch, True)
    graph.loss(**data)
    region = graph.last_regions['vlr_ld'][0]
    h, w = data['inputs'].shape[-2:]
    strides = (8, 16, 32)
    points = [[(x * s + s // 2, y * s + s // 2) for y in range(math.ceil(h / s))
               for x in range(math.ceil(w / s))] for s in strides]
    want, alpha = _square_vlr(points, strides, 2.0, gt)
    assert region.shape == (sum(len(p) for p in points),)
    assert region.tolist() == [float(v) for v in want]
    assert 0 < sum(want) < 40 and 0 < alpha < 1
    # the scale is the graph's (the LD paper's default 8 x stride gives another region)
    assert _square_vlr(points, strides, 8.0, gt)[0] != want



def test_gfl_student_learns_from_a_mod_on_gfl_teacher(tmp_path, repo):
    ckpt = save_detector_checkpoint(str(repo / MOD_GFL), tmp_path / 'teacher.pth')
    cfg = build_distill_config(str(repo / GFL_S), 'kd_ld_vlr', str(repo / MOD_GFL), ckpt)
    seen = {}
    losses, touched = train_iterations(cfg, iterations=2, batch_size=2, subset=4,
                                       on_step=teacher_checker(seen))
    assert all(torch.isfinite(torch.tensor(losses))) and all(touched.values())
    assert all(seen[f'loss_{e}'] > 0 for e in ('main_kd', 'main_ld', 'vlr_ld'))
