"""APS candidate scores (MOD Eq. 6-8) against values computed by hand."""

import math

import torch

from distill.models.assigners import aps_scores


def test_eq_6_to_8_by_hand():
    # one GT, 3 candidates; the 4th entry is padding
    l_cls = torch.tensor([[0.0, math.log(2.0), math.log(3.0), 5.0]])
    l_reg = torch.tensor([[math.log(3.0), 0.0, math.log(2.0), -5.0]])
    valid = torch.tensor([[True, True, True, False]])
    s = aps_scores(l_cls, l_reg, valid)
    # Eq. 6: softmax(log 1, log 2, log 3) = (1, 2, 3) / 6,
    #        softmax(log 3, log 1, log 2) = (3, 1, 2) / 6
    s_u = torch.tensor([(1 / 6 + 3 / 6) / 2, (2 / 6 + 1 / 6) / 2, (3 / 6 + 2 / 6) / 2])
    # Eq. 7: sigmoid(|l_cls - l_reg|) = sigmoid(log 3), sigmoid(log 2), sigmoid(log 1.5)
    s_m = torch.tensor([3 / 4, 2 / 3, 1.5 / 2.5])
    torch.testing.assert_close(s[0, :3], (s_u * s_m).sqrt())  # Eq. 8
    assert s[0, 3] == 0


def test_groups_are_independent_and_empty_groups_are_zero():
    g = torch.Generator().manual_seed(0)
    l_cls, l_reg = torch.rand(3, 6, generator=g) * 3, torch.rand(3, 6, generator=g) * 3
    valid = torch.tensor([[True] * 6, [True, True, False, False, False, False], [False] * 6])
    s = aps_scores(l_cls, l_reg, valid)
    alone = aps_scores(l_cls[1:2, :2], l_reg[1:2, :2], valid[1:2, :2])
    torch.testing.assert_close(s[1, :2], alone[0])
    assert (s[1, 2:] == 0).all() and (s[2] == 0).all() and not s.isnan().any()
