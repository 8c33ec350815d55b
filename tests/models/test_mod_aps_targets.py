"""MOD (the FCOS-style ``MODHead``) with APS trains on the targets of an independent APS
assignment: the labels and GT boxes its loss receives in a real training step of the tiny MOD
equal those of the per-GT reference (``aps_assign_per_gt``: a loop with scikit-learn's GMM) on
the same detached predictions, decoded by hand from the head's raw outputs (distances, or the
general distribution's expectation with ``box_dist=16``) and grid points written out here.
(``MODGFLHead``'s counterpart is in test_mod_anchor_heads.py.)"""

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

from distill.build import build_train_parts
from distill.models.assigners import APSAssigner
from distill.models.assigners.aps_reference import aps_assign_per_gt
from tests.helpers import record_outputs

MOD = 'configs/tiny/mod_s_digits.py'
STRIDES = (8, 16, 32)


def _hand_points_and_boxes(box_maps, reg_max):
    """Per level the grid points ``((j + 1/2) s, (i + 1/2) s)`` and, per image, the boxes
    ``point -+ distance x s``, distances read location by location from the raw maps (with a
    distribution: sum_k k softmax(logits)_k of each side's 17 bins)."""
    points, boxes = [], []
    for maps, s in zip(box_maps, STRIDES):
        b, _, h, w = maps.shape
        for i in range(h):
            for j in range(w):
                x, y = (j + 0.5) * s, (i + 0.5) * s
                points.append((x, y))
                row = []
                for n in range(b):
                    v = maps[n, :, i, j].detach()
                    if reg_max is not None:
                        p = v.view(4, reg_max + 1).softmax(-1)
                        v = (p * torch.arange(reg_max + 1.0)).sum(-1)
                    l_, t_, r_, b_ = (v * s).tolist()
                    row.append((x - l_, y - t_, x + r_, y + b_))
                boxes.append(row)
    return torch.tensor(points), torch.tensor(boxes).transpose(0, 1)  # [N, 2], [B, N, 4]


@pytest.mark.parametrize('box_dist', [None, 16])
def test_mod_head_trains_on_the_per_gt_aps_assignment_of_its_predictions(box_dist, data_cache,
                                                                         repo):
    """A real batch of 2 digits-scenes images through ``model(..., mode='loss')``: the labels
    (``num_classes`` = background) and the GT boxes of the positives that ``get_targets``
    handed to the loss equal the GT index of ``aps_assign_per_gt`` mapped to its class / box."""
    cfg = Config.fromfile(str(repo / MOD))
    cfg.model.bbox_head.box_dist = box_dist
    model, dataset, _ = build_train_parts(cfg, 2)
    head = model.bbox_head
    outs = record_outputs(head, 'forward')
    targets = record_outputs(head, 'get_targets')
    data = model.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), True)
    losses = model(**data, mode='loss')
    assert len(outs) == len(targets) == 1
    assert all(torch.isfinite(v) for v in losses.values())
    cls_scores, box_maps, _ = outs[0]
    labels = torch.cat(targets[0][0], 1)  # [B, N]
    gt_boxes = torch.cat(targets[0][1], 1)  # [B, N, 4]

    points, boxes = _hand_points_and_boxes(box_maps, box_dist)
    sizes = [m.shape[-2] * m.shape[-1] for m in cls_scores]
    logits = torch.stack([torch.cat([m[n].detach().permute(1, 2, 0).reshape(-1, 10)
                                     for m in cls_scores]) for n in range(2)])
    gts = [s.gt_instances for s in data['data_samples']]
    # the assigner of the config, built here (not the head's instance)
    args = {k: v for k, v in cfg.model.train_cfg.assigner.items() if k != 'type'}
    ref = aps_assign_per_gt(APSAssigner(**args), points, sizes, logits, boxes,
                            [g.bboxes for g in gts], [g.labels for g in gts])
    for n in range(2):
        pos = ref[n] >= 0
        assert pos.any()
        want = torch.full_like(labels[n], head.num_classes)
        want[pos] = gts[n].labels[ref[n][pos]]
        assert torch.equal(labels[n], want), \
            f'image {n}: {int((labels[n] != want).sum())} labels differ from the reference'
        torch.testing.assert_close(gt_boxes[n][pos], gts[n].bboxes[ref[n][pos]], rtol=0, atol=0)
