"""FGD's inheriting start (``inherit_from_teacher``): the student's neck and head copied from
the teacher's where the shapes match, after the student's own init; refused, in one line, where
nothing fits or the key is malformed."""

import re

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope

from distill.cli.train_distill import build_distill_config
from distill.errors import ConfigError
from tests.helpers import train_iterations

STUDENT = 'configs/tiny/gfl_s_digits.py'
TEACHER = 'configs/tiny/gfl_l_digits.py'
CKPT = 'checkpoints/gfl_l_digits_e24_seed0.pth'
#: gfl_s with the teacher's neck width and head (the backbone stays R18-sized)
WIDE = {'model.neck.out_channels': 96, 'model.bbox_head.in_channels': 96,
        'model.bbox_head.feat_channels': 96, 'model.bbox_head.stacked_convs': 4,
        'model.bbox_head.norm_cfg.num_groups': 32}


def _recipe(tmp_path, repo, inherit):
    path = tmp_path / 'pkd_inherit.py'
    path.write_text(f"_base_ = ['{repo / 'configs/recipes/pkd.py'}']\n"
                    f"inherit_from_teacher = {inherit!r}\n")
    return str(path)


def _graph(repo, recipe, options):
    init_default_scope('mmdet')
    cfg = build_distill_config(str(repo / STUDENT), recipe, str(repo / TEACHER),
                               str(repo / CKPT), cfg_options=options)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return cfg, model


def test_neck_and_head_come_from_the_teacher_where_shapes_match(tmp_path, repo):
    cfg, model = _graph(repo, _recipe(tmp_path, repo, ['neck', 'bbox_head']), WIDE)
    assert cfg.distill.inherit_from_teacher == ['neck', 'bbox_head']
    _, cold = _graph(repo, 'pkd', WIDE)  # the same seed, no inheriting
    teacher = torch.load(repo / CKPT, map_location='cpu', weights_only=True)['state_dict']
    student, start = model.architecture.state_dict(), cold.architecture.state_dict()
    # by hand from the configs: only the lateral 1x1 convs see other backbone widths
    # (R18's 32/64/128 channels against R50's 128/256/512); a conv's bias stays with its weight
    differ = {f'neck.lateral_convs.{i}.conv.{t}' for i in range(3) for t in ('weight', 'bias')}
    for name, value in student.items():
        if name.startswith(('neck.', 'bbox_head.')) and name not in differ:
            assert torch.equal(value, teacher[name]), name
        else:  # the backbone and the three lateral convs: the student's own cold start
            assert torch.equal(value, start[name]), name
    assert len([n for n in student if n.startswith(('neck.', 'bbox_head.'))]) > 20
    # what is copied is the start only: it trains (and the teacher stays as loaded)
    losses, touched = train_iterations(cfg, iterations=2, subset=4)
    assert all(touched.values())


def test_nothing_of_the_teachers_shape_is_refused_naming_a_tensor(tmp_path, repo):
    with pytest.raises(ConfigError) as err:
        _graph(repo, _recipe(tmp_path, repo, ['bbox_head']), None)  # gfl_s: 48-channel head
    msg = str(err.value)
    assert '\n' not in msg and 'pkd_inherit.py' in msg and "['bbox_head.cls_convs." in msg


@pytest.mark.parametrize('value, words', [("'neck'", 'must be a list of module names'),
                                          ("['roi_head']", re.escape("names ['roi_head']"))])
def test_a_malformed_key_is_refused_in_one_line(tmp_path, repo, value, words):
    path = tmp_path / 'bad.py'
    path.write_text(f"_base_ = ['{repo / 'configs/recipes/pkd.py'}']\n"
                    f"inherit_from_teacher = {value}\n")
    with pytest.raises(ConfigError, match=words) as err:
        build_distill_config(str(repo / STUDENT), str(path), str(repo / TEACHER),
                             str(repo / CKPT))
    assert '\n' not in str(err.value) and 'bad.py' in str(err.value)


def test_the_shipped_fgd_inherit_recipe_is_fgd_with_the_inheriting_start(repo):
    """``fgd_inherit``: fgd's edges unchanged, the start from the teacher's neck and head (the
    student of the teacher's widths: WIDE); plain ``fgd`` inherits nothing."""
    inherit, _ = _graph(repo, 'fgd_inherit', WIDE)
    plain = build_distill_config(str(repo / STUDENT), 'fgd', str(repo / TEACHER),
                                 str(repo / CKPT), cfg_options=WIDE)
    assert inherit.distill.inherit_from_teacher == ['neck', 'bbox_head']
    assert not plain.distill.get('inherit_from_teacher')
    assert inherit.model.edges == plain.model.edges
    assert inherit.model.edges_source.endswith('fgd_inherit.py')
