"""The general-distribution option's initial distribution: the maximum-entropy distribution
over the bins with a given expectation (closed forms, the maximality condition, and the heads'
starting boxes)."""

import math

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config

from distill.graph.outputs import dist_to_ltrb
from distill.models import ATSSDistHead, MODHead
from distill.models.box_dist import init_distribution, max_entropy_logits
from tests.models.test_atss_dist_head import KW as ATSS_KW
from tests.models.test_mod_head import KW as MOD_KW


def test_two_bins_closed_form():
    # bins {0, 1} with mean m: p1 = m, so the logits are (0, log(m / (1 - m))) = (0, -log 3)
    logits = max_entropy_logits(1, 0.25)
    torch.testing.assert_close(logits, torch.tensor([0.0, -math.log(3.0)], dtype=torch.float64))


def test_middle_is_uniform_as_gfls_zero_bias():
    torch.testing.assert_close(max_entropy_logits(16, 8.0), torch.zeros(17, dtype=torch.float64))


@pytest.mark.parametrize('mean', [0.5, 1.0, 4.0, 11.3, 15.5])
def test_expectation_and_maximal_entropy(mean):
    logits = max_entropy_logits(16, mean)
    bins = torch.arange(17, dtype=torch.float64)
    p = torch.softmax(logits, 0)
    assert abs(float((p * bins).sum()) - mean) < 1e-9
    entropy = float(-(p * p.log()).sum())
    # any other distribution with the same expectation has less entropy: move mass along a
    # direction v with sum(v) = 0 and sum(k v) = 0 (here: +1 at bin i, -2 at i+1, +1 at i+2)
    for i in range(15):
        v = torch.zeros(17, dtype=torch.float64)
        v[i], v[i + 1], v[i + 2] = 1.0, -2.0, 1.0
        for step in (1e-3, -1e-3):
            q = p + step * float(p[i:i + 3].min()) * v
            assert abs(float((q * bins).sum()) - mean) < 1e-9
            assert float(-(q * q.log()).sum()) < entropy


@pytest.mark.parametrize('mean', [0.0, 16.0, -1.0, 20.0])
def test_expectation_outside_the_bins_is_refused(mean):
    with pytest.raises(ValueError, match='between 0 and reg_max=16'):
        max_entropy_logits(16, mean)


def test_bias_repeats_per_side_and_prior():
    bias = torch.empty(2 * 4 * 17)
    init_distribution(bias, 16, 3.0)
    torch.testing.assert_close(bias.view(8, 17), max_entropy_logits(16, 3.0).float().expand(8, 17))


def _ddod_head():
    cfg = Config.fromfile('configs/tiny/ddod_s_digits.py')
    head = cfg.model.bbox_head
    head.update(box_dist=16, train_cfg=cfg.model.train_cfg, test_cfg=cfg.model.test_cfg)
    return MODELS.build(head)


@pytest.mark.parametrize('build, start', [
    (lambda: ATSSDistHead(**ATSS_KW, box_dist=16), 1.0),  # octave_base_scale 2: half side 1
    (_ddod_head, 1.0),  # the tiny DDOD's anchors: 2 strides
    (lambda: MODHead(rfa=None, box_dist=16, box_dist_init=3.0, **MOD_KW), 3.0),
])
def test_heads_start_at_the_expected_distance(build, start):
    torch.manual_seed(0)
    head = build()
    head.init_weights()
    c = head.in_channels
    box = head([torch.randn(1, c, 8, 8), torch.randn(1, c, 4, 4)])[1]
    for level in box:  # Tensor[1, 68, H, W]; the conv weights are Normal(0.01): noise about
        d = dist_to_ltrb(level.permute(0, 2, 3, 1).reshape(-1, 68), 16)  # the bias's start
        assert abs(float(d.mean()) - start) < 0.05
        assert float((d - start).abs().max()) < 0.5
