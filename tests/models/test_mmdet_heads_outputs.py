"""The named outputs of mmdet's own heads (RetinaHead, FCOSHead, TOODHead, RTMDetSepBNHead)
against mmdet's own code and hand values: flattening with several anchors per location, the
units of each head's boxes, the layouts of their ``get_targets``. The training runs and
refusals: test_mmdet_heads_graph.py."""

import pytest
import torch
from mmdet.structures.bbox import bbox_overlaps, distance2bbox
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

from distill.build import build_train_parts
from distill.graph.edges import split_levels
from distill.graph.outputs import flat_priors_and_strides, flatten_record, head_outputs
from distill.models import prob_logits
from distill.regions import RegionContext, flatten_levels
from distill.regions.fgd import FGDRegion
from tests.helpers import record_outputs, runner_epoch

RETINA = 'configs/tiny/retina_s_digits.py'
FCOS = 'configs/tiny/fcos_mmdet_s_digits.py'
TOOD = 'configs/tiny/tood_s_digits.py'
RTMDET = 'configs/tiny/rtmdet_s_digits.py'
GFL = 'configs/tiny/gfl_s_digits.py'


@pytest.fixture
def epoch():
    """TOOD reads the epoch from mmengine's MessageHub (a Runner sets it); restored after."""
    with runner_epoch() as set_epoch:
        yield set_epoch


def _model(repo, config, images=2):
    model, dataset, _ = build_train_parts(Config.fromfile(str(repo / config)), images)
    data = model.data_preprocessor(pseudo_collate([dataset[i] for i in range(images)]), True)
    return model, data


def _step(repo, config):
    """One training loss of the plain detector: its head's forward and get_targets."""
    model, data = _model(repo, config)
    head = model.bbox_head
    outs, targets = record_outputs(head, 'forward'), record_outputs(head, 'get_targets')
    with torch.no_grad():
        model(**data, mode='loss')
    return head, outs[-1], targets[-1], data


def _read(head, name, outs, targets, num_images):
    """What the graph's ``read`` gives for a named output (the same functions)."""
    spec = head_outputs(head)[name]
    value = flatten_record((outs if spec.tap == 'head' else targets)[spec.index], spec, head,
                           num_images)
    if spec.derive is not None:
        sizes = [tuple(m.shape[-2:]) for m in outs[0]]
        value = spec.derive(head, value, *flat_priors_and_strides(head, sizes, value.device))
    return value


def _mmdet_flat(maps, k):
    """mmdet's flattening (e.g. ``AnchorHead.loss_by_feat_single``, ``TOODHead``)."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(len(m), -1, k) for m in maps], 1)


def _assert_gt_boxes_on_positives(gt_boxes, pos, data):
    """Every positive's assigned GT box is one of its image's GT boxes."""
    assert pos.any()
    for b, sample in enumerate(data['data_samples']):
        gts = sample.gt_instances.bboxes
        dist = (gt_boxes[b][pos[b]][:, None] - gts[None]).abs().amax(-1)  # [P, G]
        assert dist.amin(1).max() < 1e-3, dist.amin(1).max()


def test_flatten_levels_gives_mmdets_rows_with_several_anchors(repo):
    model, data = _model(repo, RETINA)
    head = model.bbox_head
    assert head.num_base_priors == 9
    with torch.no_grad():
        cls, box = head(model.extract_feat(data['inputs']))
    ours = flatten_levels(cls, 9)
    torch.testing.assert_close(ours, _mmdet_flat(cls, 10), rtol=0, atol=0)
    torch.testing.assert_close(flatten_levels(box, 9), _mmdet_flat(box, 4), rtol=0, atol=0)
    # by hand: row (y W + x) A + a of level 1 is channel a K + k at (y, x)
    (h0, w0), w1 = cls[0].shape[-2:], cls[1].shape[-1]
    y, x, a, k = 1, 2, 7, 3
    row = h0 * w0 * 9 + (y * w1 + x) * 9 + a
    assert ours[1, row, k] == cls[1][1, a * 10 + k, y, x]
    # one prior per location: the transposed view, the same values as mmdet's reshape
    gfl = [m[:, :10] for m in cls]
    flat = flatten_levels(gfl)
    n = sum(m.shape[-1] * m.shape[-2] for m in gfl)
    assert flat.stride() == (10 * n, 1, n)
    torch.testing.assert_close(flat, _mmdet_flat(gfl, 10), rtol=0, atol=0)


def test_anchor_priors_and_strides_are_mmdets_location_major(repo):
    model, _ = _model(repo, RETINA, images=1)
    head = model.bbox_head
    sizes = [(4, 5), (2, 3), (1, 2)]
    priors, strides = flat_priors_and_strides(head, sizes, 'cpu')
    torch.testing.assert_close(priors,
                               torch.cat(head.prior_generator.grid_priors(sizes, device='cpu')))
    assert strides.tolist() == [8.] * 20 * 9 + [16.] * 6 * 9 + [32.] * 2 * 9
    base = head.prior_generator.base_anchors[1]  # level 1 (stride 16), [9, 4]
    for y, x, a in ((0, 0, 0), (1, 2, 4), (0, 1, 8)):
        row = 20 * 9 + (y * 3 + x) * 9 + a
        shift = torch.tensor([x * 16., y * 16., x * 16., y * 16.])
        torch.testing.assert_close(priors[row], base[a] + shift)


def test_retina_outputs_against_mmdet(repo):
    head, (cls, box), targets, data = _step(repo, RETINA)
    b = len(cls[0])
    read = dict((n, _read(head, n, (cls, box), targets, b)) for n in head_outputs(head))
    assert set(read) == {'cls_logits', 'box_deltas', 'boxes', 'labels', 'pos_mask', 'gt_boxes',
                         'label_weights'}
    torch.testing.assert_close(read['cls_logits'], _mmdet_flat(cls, 10), rtol=0, atol=0)
    torch.testing.assert_close(read['box_deltas'], _mmdet_flat(box, 4), rtol=0, atol=0)
    # mmdet's decoding (loss_by_feat_single with reg_decoded_bbox), image by image
    anchors = torch.cat(head.prior_generator.grid_priors([m.shape[-2:] for m in cls],
                                                          device='cpu'))
    for i in range(b):
        torch.testing.assert_close(read['boxes'][i],
                                   head.bbox_coder.decode(anchors, _mmdet_flat(box, 4)[i]))
    labels = torch.cat(targets[0], 1)  # AnchorHead: [B, N_l] per level, labels at 0
    assert torch.equal(read['labels'], labels)
    assert torch.equal(read['pos_mask'], (labels >= 0) & (labels < 10))
    # mmdet's label weights, [B, N_l] per level: 0 on the anchors MaxIoUAssigner ignores
    torch.testing.assert_close(read['label_weights'], torch.cat(targets[1], 1), rtol=0, atol=0)
    _assert_gt_boxes_on_positives(read['gt_boxes'], read['pos_mask'], data)
    # a positive's anchor overlaps its GT (MaxIoUAssigner; its best anchor at least)
    iou = bbox_overlaps(anchors[None].expand(b, -1, -1), read['gt_boxes'], is_aligned=True)
    assert (iou[read['pos_mask']] > 0.1).all()


def test_fcos_box_deltas_are_in_strides_for_a_training_and_an_eval_head(repo):
    model, data = _model(repo, FCOS)
    head = model.bbox_head
    with torch.no_grad():
        feats = model.extract_feat(data['inputs'])
        head.train()
        train = head(feats)
        head.eval()
        evald = head(feats)
    # mmdet's forward: the same distances, times the stride in eval only
    for level, s in enumerate((8, 16, 32)):
        torch.testing.assert_close(evald[1][level], train[1][level] * s)
    b = len(feats[0])
    head.train()
    t = _read(head, 'box_deltas', train, None, b)
    head.eval()  # read in the mode the forward ran in, as the graph does
    e = _read(head, 'box_deltas', evald, None, b)
    torch.testing.assert_close(t, _mmdet_flat(train[1], 4), rtol=0, atol=0)
    torch.testing.assert_close(e, t)
    # the boxes: mmdet's decoding at inference (DistancePointBBoxCoder on pixel distances)
    points = torch.cat(head.prior_generator.grid_priors([m.shape[-2:] for m in feats],
                                                         device='cpu'))
    torch.testing.assert_close(_read(head, 'boxes', evald, None, b),
                               distance2bbox(points, _mmdet_flat(evald[1], 4)))
    head.train()
    torch.testing.assert_close(_read(head, 'boxes', train, None, b),
                               distance2bbox(points, _mmdet_flat(evald[1], 4)))
    torch.testing.assert_close(_read(head, 'centerness', train, None, b),
                               _mmdet_flat(train[2], 1))


def test_fcos_targets_are_regrouped_by_image(repo):
    head, outs, (labels, ltrb), data = _step(repo, FCOS)
    b = len(outs[0][0])
    read = dict((n, _read(head, n, outs, (labels, ltrb), b)) for n in ('labels', 'gt_boxes'))
    sizes = [m.shape[-2] * m.shape[-1] for m in outs[0]]
    assert [len(x) for x in labels] == [b * n for n in sizes]  # mmdet: [B * N_l] per level
    start = 0
    for level, n in enumerate(sizes):
        for i in range(b):
            assert torch.equal(read['labels'][i, start:start + n],
                               labels[level][i * n:(i + 1) * n])
        start += n
    pos = (read['labels'] >= 0) & (read['labels'] < 10)
    _assert_gt_boxes_on_positives(read['gt_boxes'], pos, data)


def test_prob_logits_hand_values():
    """logit(p) = log(p / (1 - p)); 0 and 1 clamped to 1e-6 and 1 - 1e-6: +-ln(1e6 - 1)."""
    p = torch.tensor([0.0, 0.5, 1.0, 1 / (1 + torch.e ** -2), 1e-9], dtype=torch.float64)
    bound = torch.log(torch.tensor(1e6 - 1, dtype=torch.float64)).item()  # 13.8155
    want = torch.tensor([-bound, 0.0, bound, 2.0, -bound], dtype=torch.float64)
    torch.testing.assert_close(prob_logits(p), want, rtol=0, atol=1e-6)
    # float32: 1 - 1e-6 rounds to 0.99999899, a logit of 13.80; still finite
    torch.testing.assert_close(prob_logits(p.float()), want.float(), rtol=0, atol=0.02)


@pytest.mark.parametrize('at_epoch', [0, 5])  # TOOD: ATSS's assignment, then task-aligned
def test_tood_outputs_against_mmdet(at_epoch, epoch, repo):
    epoch(at_epoch)
    head, (cls, box), targets, data = _step(repo, TOOD)
    b = len(cls[0])
    probs = _mmdet_flat(cls, 10)  # TOOD's forward: probabilities
    logits = _read(head, 'cls_logits', (cls, box), targets, b)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits.sigmoid(), probs.clamp(1e-6, 1 - 1e-6))
    strides = torch.cat([torch.full((m.shape[-2] * m.shape[-1],), s) for m, s in
                         zip(cls, (8., 16., 32.))])
    # TOODHead.loss_by_feat: bbox_pred.permute(0, 2, 3, 1).reshape(B, -1, 4) * stride
    torch.testing.assert_close(_read(head, 'boxes', (cls, box), targets, b),
                               _mmdet_flat(box, 4) * strides[:, None], rtol=0, atol=0)
    labels = _read(head, 'labels', (cls, box), targets, b)
    assert torch.equal(labels, torch.cat(targets[1], 1))
    gt_boxes = _read(head, 'gt_boxes', (cls, box), targets, b)
    assert torch.equal(gt_boxes, torch.cat(targets[3], 1))
    _assert_gt_boxes_on_positives(gt_boxes, (labels >= 0) & (labels < 10), data)
    assert 'box_deltas' not in head_outputs(head)


def test_rtmdet_outputs_against_mmdet(repo):
    head, (cls, box), targets, data = _step(repo, RTMDET)
    assert type(head).__name__ == 'RTMDetSepBNHead'
    b = len(cls[0])
    read = dict((n, _read(head, n, (cls, box), targets, b)) for n in head_outputs(head))
    torch.testing.assert_close(read['cls_logits'], _mmdet_flat(cls, 10), rtol=0, atol=0)
    # RTMDetHead.loss_by_feat: distance2bbox(anchor, bbox_pred) with the (x, y, s, s) anchors
    metas = [s.metainfo for s in data['data_samples']]
    anchors = torch.cat(head.get_anchors([m.shape[-2:] for m in cls], metas, 'cpu')[0][0])
    torch.testing.assert_close(read['boxes'], distance2bbox(anchors[:, :2],
                                                            _mmdet_flat(box, 4)))
    torch.testing.assert_close(read['box_deltas'] * anchors[:, 2:3], _mmdet_flat(box, 4))
    assert torch.equal(read['labels'], torch.cat(targets[1], 1))
    assert torch.equal(read['gt_boxes'], torch.cat(targets[3], 1))
    _assert_gt_boxes_on_positives(read['gt_boxes'], read['pos_mask'], data)


def test_feature_region_weights_are_per_location_with_several_anchors(repo):
    """FGD's foreground on RetinaNet's 9 anchors per location: each location's 9 priors get
    the one weight, the same as on one anchor per location (GFL's), and split_levels gives
    it per location."""
    retina, _ = _model(repo, RETINA, images=1)
    gfl, _ = _model(repo, GFL, images=1)
    sizes = [(8, 8), (4, 4), (2, 2)]
    gt = [torch.tensor([[10., 20., 50., 44.], [30., 3., 41., 15.]])]
    weights = {}
    for name, head in (('retina', retina.bbox_head), ('gfl', gfl.bbox_head)):
        ctx = RegionContext(priors=head.prior_generator.grid_priors(sizes, device='cpu'),
                            gt_bboxes=gt)
        weights[name] = FGDRegion((8, 16, 32))(ctx)
    r = weights['retina'].reshape(1, -1, 9)
    assert (r == r[..., :1]).all()
    torch.testing.assert_close(r[..., 0], weights['gfl'], rtol=0, atol=0)
    assert 0 < (weights['gfl'] > 0).sum() < weights['gfl'].numel()
    maps = [torch.zeros(1, 4, h, w) for h, w in sizes]
    for a, b in zip(split_levels(weights['retina'], maps), split_levels(weights['gfl'], maps)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a location weighs as its heaviest anchor
    w = torch.zeros(1, 9 * 84)
    w[0, 9 * 3 + 4] = 0.5
    assert split_levels(w, maps)[0][0, 0, 0, 3] == 0.5
    with pytest.raises(ValueError, match='not the head\'s levels'):
        split_levels(w[:, :-1], maps)
