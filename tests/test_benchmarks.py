"""What benchmarks/distill_step.py's CrossKD lower bound times: the teacher's last tower convs
and predictors with gradients to their inputs only."""

import sys

from tests.conftest import REPO

sys.path.insert(0, str(REPO / 'benchmarks'))
import distill_step  # noqa: E402


def test_cross_bound_times_input_gradients_through_the_frozen_teacher(tmp_path):
    pair = distill_step.make_pair('tiny', tmp_path)
    ckpt = distill_step.teacher_checkpoint(tmp_path / 't.pth', pair)
    bound, data, optim = distill_step.build_variant('cross_bound', 'crosskd', ckpt, 2, 'cpu',
                                                    pair)
    assert optim is None
    head = bound.head
    # one feed per FPN level, at the teacher's tower width and the levels' sizes
    assert [f.shape[1] for f in bound.feeds] == [head.feat_channels] * len(head.scales)
    assert [f.shape[2:] for f in bound.feeds] == [(32, 32), (16, 16), (8, 8)]
    seconds = distill_step.time_variant('cross_bound', bound, data, None, 'cpu')
    assert seconds > 0
    assert all(p.grad is None and not p.requires_grad for p in head.parameters())
    for xc, xr in bound.inputs:  # both towers' inputs get a gradient
        assert xc.grad is not None and xc.grad.abs().sum() > 0
        assert xr.grad is not None and xr.grad.abs().sum() > 0
