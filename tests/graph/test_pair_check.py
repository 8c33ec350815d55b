"""``check_pair`` on real built mmdet detectors (the tiny configs, changed by overrides).

Every mismatch is a :class:`PairMismatchError` (a ``DistillError``) whose message is one line:
the field, both values, both config files and what to do. ``test_graph.py`` checks the same
through the whole graph for a few fields (classes, ``reg_max`` of an ATSS teacher, strides).
"""

import pytest
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

from distill.errors import DistillError
from distill.graph import PairMismatchError, check_pair

GFL_S = 'configs/tiny/gfl_s_digits.py'
GFL_L = 'configs/tiny/gfl_l_digits.py'
ATSS_S = 'configs/tiny/atss_s_digits.py'
ATSS_L = 'configs/tiny/atss_l_digits.py'


def build(repo, config, options=None):
    """The detector of ``config`` with ``options`` (``--cfg-options`` style) merged."""
    init_default_scope('mmdet')
    cfg = Config.fromfile(str(repo / config))
    cfg.merge_from_dict(options or {})
    return MODELS.build(cfg.model)


def tiny_faster_rcnn(repo):
    """A two-stage detector on the tiny student's backbone: ``rpn_head`` and ``roi_head``, no
    dense ``bbox_head``."""
    init_default_scope('mmdet')
    base = Config.fromfile(str(repo / GFL_S)).model
    coder = dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[1.0] * 4)
    model = dict(
        type='FasterRCNN', data_preprocessor=base.data_preprocessor, backbone=base.backbone,
        neck=dict(type='FPN', in_channels=[32, 64, 128], out_channels=32, num_outs=4),
        rpn_head=dict(
            type='RPNHead', in_channels=32, feat_channels=32, bbox_coder=coder,
            anchor_generator=dict(type='AnchorGenerator', scales=[4], ratios=[1.0],
                                  strides=[8, 16, 32, 64]),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        roi_head=dict(
            type='StandardRoIHead',
            bbox_roi_extractor=dict(
                type='SingleRoIExtractor', out_channels=32, featmap_strides=[8, 16, 32],
                roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0)),
            bbox_head=dict(
                type='Shared2FCBBoxHead', in_channels=32, fc_out_channels=64, roi_feat_size=7,
                num_classes=10, bbox_coder=dict(coder, target_stds=[0.1, 0.1, 0.2, 0.2]),
                loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                loss_bbox=dict(type='L1Loss', loss_weight=1.0))),
        train_cfg=None,
        test_cfg=dict(
            rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7),
                     min_bbox_size=0),
            rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                      max_per_img=100)))
    return MODELS.build(Config(dict(model=model)).model)  # attribute access to the sub-dicts


def mismatch(student, teacher, names=('s_cfg.py', 't_cfg.py')) -> str:
    """The message of the PairMismatchError that ``check_pair`` raises (checked: one line)."""
    with pytest.raises(PairMismatchError) as err:
        check_pair(student, teacher, *names)
    msg = str(err.value)
    assert '\n' not in msg, msg
    assert isinstance(err.value, DistillError) and isinstance(err.value, ValueError)
    assert f'student {names[0]}' in msg and f'teacher {names[1]}' in msg, msg
    assert '; use a ' in msg, msg  # says what to do
    return msg


def test_a_matching_pair_passes(repo):
    assert check_pair(build(repo, GFL_S), build(repo, GFL_L), GFL_S, GFL_L) is None
    assert check_pair(build(repo, ATSS_S), build(repo, ATSS_L), ATSS_S, ATSS_L) is None


# (teacher overrides, field, student value, teacher value) with the gfl_s student
FIELDS = [
    ({'model.data_preprocessor.mean': [0.0, 0.0, 0.0]},
     'model.data_preprocessor.mean', '(123.675, 116.28, 103.53)', '(0.0, 0.0, 0.0)'),
    ({'model.data_preprocessor.std': [1.0, 1.0, 1.0]},
     'model.data_preprocessor.std', '(58.395, 57.12, 57.375)', '(1.0, 1.0, 1.0)'),
    ({'model.data_preprocessor.bgr_to_rgb': False},
     'model.data_preprocessor.bgr_to_rgb', 'True', 'False'),
    ({'model.bbox_head.reg_max': 8}, 'model.bbox_head.reg_max', '16', '8'),
    ({'model.bbox_head.num_classes': 3}, 'model.bbox_head.num_classes', '10', '3'),
    ({'model.bbox_head.anchor_generator.strides': [16, 32, 64]},
     'model.bbox_head.anchor_generator.strides', '[(8, 8), (16, 16), (32, 32)]',
     '[(16, 16), (32, 32), (64, 64)]'),
]


@pytest.mark.parametrize('options, field, s_value, t_value', FIELDS,
                         ids=[f[1].rsplit('.', 1)[-1] for f in FIELDS])
def test_each_mismatching_field_is_named_with_both_values_and_files(
        options, field, s_value, t_value, repo):
    msg = mismatch(build(repo, GFL_S), build(repo, GFL_L, options), (GFL_S, GFL_L))
    assert f'{field} is {s_value} in student {GFL_S} vs {t_value} in teacher {GFL_L}' in msg
    assert msg.count(' is ') == 1, msg  # that field only


def test_every_mismatch_is_listed_on_one_line(repo):
    teacher = build(repo, GFL_L, {'model.data_preprocessor.bgr_to_rgb': False,
                                  'model.bbox_head.reg_max': 7})
    msg = mismatch(build(repo, GFL_S), teacher)
    assert 'bgr_to_rgb is True' in msg and 'reg_max is 16' in msg and 'vs 7 in' in msg


@pytest.mark.parametrize('options, s_value, t_value', [
    ({'model.bbox_head.anchor_generator.ratios': [0.5, 1.0]}, 1, 2),
    ({'model.bbox_head.anchor_generator.scales_per_octave': 2}, 1, 2),
])
def test_different_priors_per_location_are_refused(options, s_value, t_value, repo):
    """ATSS heads take any number of anchors per location (GFL's head asserts one); the graph
    pairs outputs prior by prior, so it needs the same number on both sides (but only where
    an edge reads a head output: the neck's maps have a value per location)."""
    teacher = build(repo, ATSS_L, options)
    assert teacher.bbox_head.num_base_priors == t_value
    msg = mismatch(build(repo, ATSS_S), teacher, (ATSS_S, ATSS_L))
    assert (f'priors per location (anchor ratios x scales_per_octave) is {s_value} in student '
            f'{ATSS_S} vs {t_value} in teacher {ATSS_L} but must be equal') in msg
    # the same number on both sides pairs (RetinaNet's 9 anchors with 9)
    check_pair(build(repo, ATSS_S, options), teacher)
    # and feature edges alone do not need it
    check_pair(build(repo, ATSS_S), teacher, outputs={'neck'})
    with pytest.raises(PairMismatchError, match='priors per location'):
        check_pair(build(repo, ATSS_S), teacher, outputs={'neck', 'cls_logits'})


def test_gfl_head_itself_refuses_several_priors(repo):
    """Why the prior test uses ATSS: mmdet's GFL head cannot be built with two anchors."""
    with pytest.raises(AssertionError):
        build(repo, GFL_L, {'model.bbox_head.anchor_generator.ratios': [0.5, 1.0]})


@pytest.mark.parametrize('side', ['teacher', 'student'])
def test_a_detector_without_dense_head_is_refused(side, repo):
    faster, gfl = tiny_faster_rcnn(repo), build(repo, GFL_S)
    assert getattr(faster, 'bbox_head', None) is None and faster.rpn_head and faster.roi_head
    pair = (gfl, faster) if side == 'teacher' else (faster, gfl)
    msg = mismatch(*pair, ('student.py', 'teacher.py'))
    none = 'none (FasterRCNN has rpn_head, roi_head, no dense bbox_head)'
    s_value, t_value = ('GFLHead', none) if side == 'teacher' else (none, 'GFLHead')
    assert (f'model.bbox_head is {s_value} in student student.py vs {t_value} in teacher '
            f'teacher.py') in msg
    assert 'single-stage' in msg
