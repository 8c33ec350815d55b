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


def test_cache_size_measures_the_records_the_shapes_predict(tmp_path):
    """benchmarks/cache_size.py's bytes per tap are the teacher's record sizes (head: class +
    4 x (reg_max + 1) logits per location; neck: its channels), plus a small file header;
    float16 half of them."""
    import math

    import cache_size
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    from distill.cli.train_distill import build_distill_config

    init_default_scope('mmdet')
    teacher = str(REPO / 'configs/tiny/gfl_l_digits.py')
    ckpt = cache_size._teacher_checkpoint(teacher, str(tmp_path))
    inputs, samples = cache_size._image(250, 200, 32)
    assert tuple(inputs.shape[2:]) == (256, 224)  # padded up to the divisor
    # kd reads the teacher's head; pkd its neck alone (the teacher's head does not run)
    for recipe, tap in (('kd', 'head'), ('pkd', 'neck')):
        cfg = build_distill_config(str(REPO / 'configs/tiny/gfl_s_digits.py'), recipe, teacher,
                                   ckpt)
        model = MODELS.build(cfg.model).eval()
        head = model._teacher.bbox_head
        locations = sum(math.ceil(256 / s[0]) * math.ceil(224 / s[0])
                        for s in head.prior_generator.strides)
        channels = dict(head=head.cls_out_channels + 4 * (head.reg_max + 1),
                        neck=model._teacher.neck.out_channels)[tap]
        for fp16, scale in ((False, 1), (True, 2)):
            sizes = cache_size.tap_bytes(model, inputs, samples, fp16)
            assert list(sizes) == [tap], (recipe, sizes)
            expected = locations * channels * 4 // scale
            assert expected <= sizes[tap] <= expected + 8192, (recipe, fp16, sizes)
