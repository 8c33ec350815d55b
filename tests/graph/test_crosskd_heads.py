"""CrossKD and PKD (and LD without DFL), and the feature methods CWD, MGD, FGD with BCKD, on
every head family the toolkit supports: a few real training steps each (finite losses, a
gradient on every student parameter and adapter, the teacher untouched). The cross-head values
and gradients of each head family against a hand-run of the teacher's layers:
test_cross_values.py."""

import pytest

from distill.cli.train_distill import build_distill_config
from tests.helpers import save_detector_checkpoint, train_checking_edges

T = 'configs/tiny/'
DIST = {'model.bbox_head.box_dist': 16}
ATSS_DIST = {'model.bbox_head.type': 'ATSSDistHead', **DIST}
# (student, teacher, options of both, recipe, the student's and the teacher's tower depths)
CASES = {
    'gfl': ('gfl_s_digits.py', 'gfl_l_digits.py', None, 'crosskd'),
    'gfl_pkd': ('gfl_s_digits.py', 'gfl_l_digits.py', None, 'crosskd+pkd'),
    'gfl_pkd_only': ('gfl_s_digits.py', 'gfl_l_digits.py', None, 'pkd'),
    'gfl_ld_nodfl': ('gfl_s_digits.py', 'gfl_l_digits.py', None, 'ld_nodfl'),
    'gfl_xs': ('gfl_xs_digits.py', 'gfl_l_digits.py', None, 'crosskd+pkd'),
    'atss': ('atss_s_digits.py', 'atss_l_digits.py', None, 'crosskd_atss'),
    'atss_dist': ('atss_s_digits.py', 'atss_l_digits.py', ATSS_DIST, 'crosskd'),
    'ddod': ('ddod_s_digits.py', 'ddod_s_digits.py', None, 'crosskd_ddod'),
    'ddod_dist': ('ddod_s_digits.py', 'ddod_s_digits.py', DIST, 'crosskd+pkd'),
    'mod': ('mod_s_digits.py', 'mod_s_digits.py', None, 'crosskd_fcos'),
    'fcos': ('fcos_s_digits.py', 'fcos_s_digits.py', None, 'crosskd_fcos'),
    'mod_dist': ('mod_s_digits.py', 'mod_s_digits.py', DIST, 'crosskd'),
    'mod_gfl': ('mod_gfl_s_digits.py', 'gfl_l_digits.py', None, 'crosskd'),
    'salt': ('salt_s_digits.py', 'salt_l_digits.py', None, 'crosskd+pkd'),
}
# CWD, MGD, FGD (the neck) and BCKD (cls_logits, boxes) in one run per family; GFL's:
# test_feature_methods_graph.py and test_bckd.py
FEATURES = 'cwd+mgd+fgd+bckd'
CASES.update({
    'atss_features': ('atss_s_digits.py', 'atss_l_digits.py', None, FEATURES),
    'ddod_features': ('ddod_s_digits.py', 'ddod_s_digits.py', None, FEATURES),
    'mod_features': ('mod_s_digits.py', 'mod_s_digits.py', None, FEATURES),
    'fcos_features': ('fcos_s_digits.py', 'fcos_s_digits.py', None, FEATURES),
    'salt_features': ('salt_s_digits.py', 'salt_l_digits.py', None, FEATURES),
})


@pytest.mark.parametrize('case', sorted(CASES))
def test_crosskd_trains_every_head_family(case, tmp_path, repo):
    student, teacher, options, recipe = CASES[case]
    teacher_cfg = str(repo / T / teacher)
    if options:  # the teacher gets the same head option (its checkpoint is built with it)
        teacher_cfg = str(tmp_path / 'teacher.py')
        lines = [f"_base_ = '{repo / T / teacher}'", 'model = dict(bbox_head=dict(']
        lines += [f'    {k.rsplit(".", 1)[-1]}={v!r},' for k, v in options.items()]
        (tmp_path / 'teacher.py').write_text('\n'.join(lines + ['))\n']))
    ckpt = save_detector_checkpoint(teacher_cfg, tmp_path / 'teacher.pth', seed=1)
    cfg = build_distill_config(str(repo / T / student), recipe, teacher_cfg, ckpt,
                               cfg_options=options)
    seen, touched = train_checking_edges(cfg)
    assert any(seen[f'loss_{e["name"]}'] > 0 for e in cfg.model.edges)
    # adapters exactly where the widths differ; everything else trained is the student
    from mmengine.config import Config
    widths = [Config.fromfile(c).model.bbox_head.feat_channels
              for c in (str(repo / T / student), teacher_cfg)]
    adapters = {n.split('.')[1] for n in touched if n.startswith('adapters.')}
    # MGD's generation and FGD's relation blocks are trained too (not exported)
    assert all(n.startswith(('architecture.', 'adapters.', 'edge_losses.mgd.',
                             'edge_losses.fgd.')) for n in touched)
    if recipe == FEATURES:  # every feature edge moves the student; BCKD's class edge is dense
        assert all(seen[f'loss_{n}'] > 0 for n in ('cwd', 'mgd', 'fgd', 'bckd_cls')), seen
        assert any(n.startswith('edge_losses.fgd.') for n in touched)
    crosses = any(e['student'].get('of') == 'cross' or e['student'].get('output') == 'neck'
                  for e in cfg.model.edges)
    assert bool(adapters) == (crosses and widths[0] != widths[1]), (widths, adapters)
    if recipe == 'ld_nodfl':  # the student's DFL is off, its QFL and GIoU are not
        assert seen['loss_dfl'] == 0 and seen['loss_bbox'] > 0 and seen['loss_cls'] > 0
