"""SALT-Net's head in the graph: as a student under every recipe (SDR included, alone and with a
teacher's recipe), as a teacher of a GFL student, its losses against GFL's and a naive loop,
the SDR edge against Eq. 9 on the head's own outputs, and inference with either stage."""

import pytest
import torch
from mmdet.models.dense_heads import GFLHead
from mmdet.structures.bbox import bbox_overlaps
from mmengine.dataset import pseudo_collate

from distill.build import build_train_parts
from distill.cli.train_distill import build_distill_config
from distill.graph.algorithm import read_tap
from tests.helpers import save_detector_checkpoint, teacher_checker, train_iterations

SALT_S = 'configs/tiny/salt_s_digits.py'
SALT_L = 'configs/tiny/salt_l_digits.py'
GFL_S = 'configs/tiny/gfl_s_digits.py'
GFL_L = 'configs/tiny/gfl_l_digits.py'


@pytest.fixture(scope='module')
def gfl_teacher(tmp_path_factory, repo):
    return save_detector_checkpoint(str(repo / GFL_L), tmp_path_factory.mktemp('t') / 'gfl.pth')


@pytest.fixture(scope='module')
def salt_teacher(tmp_path_factory, repo):
    return save_detector_checkpoint(str(repo / SALT_L), tmp_path_factory.mktemp('t') / 'salt.pth')


@pytest.mark.parametrize('recipe', ['none', 'sdr', 'kd', 'ld', 'ld_vlr', 'kd_ld_vlr',
                                    'kd_ld_vlr+sdr'])
def test_salt_student_trains_under_every_recipe(recipe, gfl_teacher, repo):
    cfg = build_distill_config(str(repo / SALT_S), recipe, str(repo / GFL_L), gfl_teacher)
    seen = {}
    losses, touched = train_iterations(cfg, iterations=3, batch_size=2, subset=6,
                                       on_step=teacher_checker(seen))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(touched.values()), [n for n, t in touched.items() if not t]
    assert {'loss_cls', 'loss_bbox', 'loss_dfl', 'loss_bbox_stage1'} <= set(seen)
    for edge in cfg.model.edges:
        assert 0 <= seen[f'loss_{edge["name"]}'] < float('inf')
    assert ('loss_sdr' in seen) == ('sdr' in recipe)
    assert ('teacher' in cfg.model) == (recipe not in ('none', 'sdr'))


def test_gfl_student_learns_from_a_salt_teacher(salt_teacher, repo):
    """SALT-Net's stage-2 distributions feed LD, its joint scores KD."""
    cfg = build_distill_config(str(repo / GFL_S), 'kd_ld_vlr', str(repo / SALT_L), salt_teacher)
    losses, touched = train_iterations(cfg, iterations=2, batch_size=2, subset=4,
                                       on_step=teacher_checker({}))
    assert all(torch.isfinite(torch.tensor(losses))) and all(touched.values())


def _forward(config, repo, n=2, recipe='none'):
    cfg = build_distill_config(str(repo / config), recipe)
    graph, dataset, _ = build_train_parts(cfg, n)
    data = graph.data_preprocessor(pseudo_collate([dataset[i] for i in range(n)]), True)
    return graph, data


def test_stage2_losses_are_gfls_and_stage1_is_a_weighted_giou(repo):
    """QFL, GIoU and DFL of SALTHead equal mmdet's GFLHead.loss_by_feat on the same outputs;
    the stage-1 GIoU equals a naive loop: sum over positives of score * (1 - GIoU), divided
    by the sum of the scores clamped at 1 (GFL's normalisation of its box loss: at this
    initialisation the scores are ~0.005, so the clamp is what applies)."""
    graph, data = _forward(SALT_S, repo)
    det = graph.architecture
    head = det.bbox_head
    with torch.no_grad():
        cls, dist, ltrb = head(det.extract_feat(data['inputs']))
        gts = [s.gt_instances for s in data['data_samples']]
        metas = [s.metainfo for s in data['data_samples']]
        ours = head.loss_by_feat(cls, dist, ltrb, gts, metas)
        gfl = GFLHead.loss_by_feat(head, cls, dist, gts, metas)
    for k in ('loss_cls', 'loss_bbox', 'loss_dfl'):
        torch.testing.assert_close(sum(ours[k]), sum(gfl[k]))
    # naive stage 1: one positive at a time
    anchors, valid = head.get_anchors([m.shape[-2:] for m in cls], metas, device='cpu')
    targets = head.get_targets(anchors, valid, gts, metas)
    labels, boxes_t = torch.cat(targets[1], 1), torch.cat(targets[3], 1)
    num, den = 0.0, 0.0
    for lvl, stride in enumerate(head.prior_generator.strides):
        start = sum(m.shape[-2] * m.shape[-1] for m in cls[:lvl])
        h, w = cls[lvl].shape[-2:]
        for b in range(len(gts)):
            for i in range(h * w):
                label = int(labels[b, start + i])
                if not 0 <= label < head.num_classes:
                    continue
                y, x = divmod(i, w)
                cx, cy = x * stride[0], y * stride[1]  # GFL's anchors are centred on the grid
                l_, t_, r_, b_ = (ltrb[lvl][b, :, y, x] * stride[0]).tolist()
                pred = torch.tensor([[cx - l_, cy - t_, cx + r_, cy + b_]])
                giou = bbox_overlaps(pred, boxes_t[b, start + i][None], mode='giou')[0, 0]
                score = cls[lvl][b, :, y, x].sigmoid().max()
                num += float(score * (1 - giou))
                den += float(score)
    assert den > 0
    assert float(sum(ours['loss_bbox_stage1'])) == pytest.approx(num / max(den, 1.0), rel=1e-4)


def test_sdr_edge_is_eq9_on_the_heads_outputs(repo):
    """The graph's ``sdr`` edge equals Eq. 9 recomputed from the head's raw outputs: stage-1
    boxes from the distances, stage-2 boxes from mmdet's Integral and coder, positives and GT
    boxes from the assignment, y = the max joint score, divided by the number of positives."""
    graph, data = _forward(SALT_S, repo, recipe='sdr')
    with torch.no_grad():
        losses = graph(**data, mode='loss')
    head = graph.architecture.bbox_head
    rec = graph.student_recorders
    cls, dist, ltrb = (read_tap(rec, dict(tap='head', index=i)) for i in range(3))
    targets = read_tap(rec, dict(tap='assign'))
    labels, gt = torch.cat(targets[1], 1), torch.cat(targets[3], 1)
    expected, n_pos = 0.0, 0
    for lvl, stride in enumerate(head.prior_generator.strides):
        start = sum(m.shape[-2] * m.shape[-1] for m in cls[:lvl])
        h, w = cls[lvl].shape[-2:]
        centres = head.anchor_center(targets[0][lvl][0])
        for b in range(len(labels)):
            for i in range(h * w):
                if not 0 <= int(labels[b, start + i]) < head.num_classes:
                    continue
                y, x = divmod(i, w)
                c = centres[i]
                d1 = ltrb[lvl][b, :, y, x] * stride[0]
                r1 = torch.cat([c - d1[:2], c + d1[2:]])[None]
                d2 = head.integral(dist[lvl][b, :, y, x][None]) * stride[0]
                r2 = head.bbox_coder.decode(c[None], d2)
                g = gt[b, start + i][None]
                iou1, iou2 = bbox_overlaps(r1, g)[0, 0], bbox_overlaps(r2, g)[0, 0]
                score = cls[lvl][b, :, y, x].sigmoid().max()
                n_pos += 1
                if iou2 > iou1:
                    giou = bbox_overlaps(r1, r2, mode='giou')[0, 0]
                    expected += float(score * iou2 * (1 - giou))
    assert n_pos > 0
    assert float(losses['loss_sdr']) == pytest.approx(expected / n_pos, rel=1e-4, abs=1e-9)


def test_either_stage_can_make_the_boxes(repo):
    """Stage-1 inference decodes the coarse distances: with a stage-2 distribution whose
    integral equals those distances (one-hot bins), both stages give the same detections."""
    graph, data = _forward(SALT_S, repo)
    det = graph.architecture.eval()
    head = det.bbox_head
    with torch.no_grad():
        cls, _, ltrb = head(det.extract_feat(data['inputs']))
    g = torch.Generator().manual_seed(0)
    ltrb = [torch.randint(1, head.reg_max, m.shape, generator=g).float() for m in ltrb]
    onehot = [50.0 * torch.nn.functional.one_hot(m.long(), head.reg_max + 1)
              .permute(0, 1, 4, 2, 3).flatten(1, 2).float() for m in ltrb]
    metas = [s.metainfo for s in data['data_samples']]
    out = {}
    for stage in (1, 2):
        cfg = dict(head.test_cfg, box_stage=stage, score_thr=0.0)
        out[stage] = head.predict_by_feat(cls, onehot, ltrb, batch_img_metas=metas,
                                          cfg=type(head.test_cfg)(cfg))
    for a, b in zip(out[1], out[2]):
        assert len(a) > 0
        torch.testing.assert_close(a.bboxes, b.bboxes)
        torch.testing.assert_close(a.scores, b.scores)
    with pytest.raises(ValueError, match='box_stage must be 1 or 2'):
        build_train_parts(build_distill_config(str(repo / SALT_S), 'none', cfg_options={
            'model.test_cfg.box_stage': 3}), 1)


@pytest.mark.parametrize('d_relu', [True, False])
def test_disentanglement_vectors_paper_and_published(d_relu, repo, monkeypatch):
    """Eq. 4 (d_relu=True): D = ReLU(conv_d(F^c)); the published form: D = conv_d(F^c). With
    conv_d's output set to -1 everywhere, the paper's exp(D) is 1 (classification points =
    regression points) and the published one exp(-1) (points moved inward)."""
    from distill.models import salt_head
    graph, data = _forward(SALT_S, repo)
    head = graph.architecture.bbox_head
    head.d_relu = d_relu
    torch.nn.init.zeros_(head.conv_d.weight)
    torch.nn.init.constant_(head.conv_d.bias, -1.0)
    seen = []
    original = salt_head.classification_points

    def recorded(reg_points, d, mode):
        seen.append((reg_points, d))
        return original(reg_points, d, mode)

    monkeypatch.setattr(salt_head, 'classification_points', recorded)
    head(graph.architecture.extract_feat(data['inputs']))
    reg_points, d = seen[0]
    torch.testing.assert_close(d, torch.full_like(d, 0.0 if d_relu else -1.0))
    cls = original(reg_points, d, 'exp')
    factor = 1.0 if d_relu else float(torch.tensor(-1.0).exp())
    torch.testing.assert_close(cls, reg_points * factor)
