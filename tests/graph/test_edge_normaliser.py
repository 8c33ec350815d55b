"""The edge normalisers: hand values, and a CrossKD step on a batch without a single student
positive divides its 'positives' edges by 1 (mmdet's floor), not by a float epsilon."""

import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from distill.build import build_train_parts
from distill.cli.train_distill import build_distill_config
from distill.graph import algorithm
from distill.graph.edges import edge_normaliser


def test_hand_values():
    w = torch.tensor([0.5, 0.25, 0.0])
    pos = torch.zeros(2, 5, dtype=torch.bool)
    assert float(edge_normaliser(w, 'positives', pos)) == 1.0  # no positive: 1
    pos[0, 1] = pos[1, 0] = pos[1, 4] = True
    assert float(edge_normaliser(w, 'positives', pos)) == 3.0
    assert float(edge_normaliser(w, 'weight')) == 0.75
    assert float(edge_normaliser(w, 'count')) == 3.0
    assert float(edge_normaliser(w, 4)) == 4.0
    # a total weight below 1 stays a weighted mean (no clamp at 1 there)
    assert float(edge_normaliser(torch.tensor([0.01, 0.02]), 'weight')) == pytest.approx(0.03)
    empty = torch.zeros(0)
    assert float(edge_normaliser(empty, 'weight')) == torch.finfo(torch.float32).eps




def test_crosskd_on_an_all_negative_batch(repo, monkeypatch):
    init_default_scope('mmdet')
    cfg = build_distill_config(str(repo / 'configs/tiny/gfl_s_digits.py'), 'crosskd',
                               str(repo / 'configs/tiny/gfl_l_digits.py'),
                               str(repo / 'checkpoints/gfl_l_digits_e24_seed0.pth'))
    model, dataset, _ = build_train_parts(cfg, 4, 0)
    data = model.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), True)
    for sample in data['data_samples']:  # no ground truth: no student positive
        sample.gt_instances = sample.gt_instances[:0]
    seen = []
    original = algorithm.edge_normaliser

    def recorded(w, normalize, pos_mask=None):
        seen.append((normalize, None if pos_mask is None else int(pos_mask.sum()),
                     float(original(w, normalize, pos_mask))))
        return original(w, normalize, pos_mask)

    monkeypatch.setattr(algorithm, 'edge_normaliser', recorded)
    losses = model.loss(data['inputs'], data['data_samples'])
    assert ('positives', 0, 1.0) in seen
    edge = {k: float(v) for k, v in losses.items() if k.startswith('loss_crosskd')}
    assert edge and all(torch.isfinite(torch.tensor(v)) and v < 1e3 for v in edge.values()), edge
