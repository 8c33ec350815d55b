"""tools/sweep_recipe.py: one field changed per variant, the rest of the recipe kept, and
clear errors for keys that name nothing."""

import pytest

from distill.cli.sweep_recipe import main
from distill.cli.train_distill import read_recipes, read_recipes_with_options
from distill.errors import RecipeError


def test_variants_change_one_field_and_keep_the_rest(tmp_path):
    paths = main(['ld_nodfl', '--set', 'main_ld.loss.T=5,15', '--set',
                  'main_ld.normalize=weight', '--out', str(tmp_path)])
    assert [p.rsplit('/', 1)[-1] for p in paths] == ['ld_nodfl-T5.py', 'ld_nodfl-T15.py',
                                                     'ld_nodfl-normalizeweight.py']
    base, _, base_options = read_recipes_with_options('ld_nodfl')
    for path, (field, value) in zip(paths, [('T', 5), ('T', 15), ('normalize', 'weight')]):
        edges, _, options = read_recipes_with_options(path)
        assert options == base_options == {'model.bbox_head.loss_dfl.loss_weight': 0.0}
        (edge,), (orig,) = edges, base
        if field == 'T':
            assert edge['loss'] == dict(orig['loss'], T=value)
            assert {k: v for k, v in edge.items() if k != 'loss'} == \
                {k: v for k, v in orig.items() if k != 'loss'}
        else:
            assert edge == dict(orig, normalize=value)


@pytest.mark.parametrize('key, message', [
    ('main_kd.loss.T', r"names no edge field; its edges are \['main_ld'\]"),
    ('main_ld.los.T', r"edge 'main_ld' has no dict field 'los'"),
    ('main_ld.loss.Tee', r"loss.*Tee.*LDLoss takes"),
])
def test_keys_that_name_nothing_are_refused(key, message, tmp_path):
    with pytest.raises(RecipeError, match=message):
        main(['ld', '--set', f'{key}=5', '--out', str(tmp_path)])
    with pytest.raises(RecipeError, match='expected <edge>.<field>=v1,v2'):
        main(['ld', '--set', 'main_ld.loss.T', '--out', str(tmp_path)])


def test_read_back_as_a_run_would(tmp_path):
    (path,) = main(['kd_ld_vlr', '--set', 'vlr_ld.region.gamma=0.5', '--out', str(tmp_path)])
    edges, _ = read_recipes(path)
    assert [e['region'].get('gamma') for e in edges] == [None, None, 0.5]


def test_recipe_student_options_must_be_a_dict(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text("edges = []\nstudent_options = ['model.bbox_head.loss_dfl.loss_weight']\n")
    with pytest.raises(RecipeError, match=r'bad.py: student_options=.*must be a dict'):
        read_recipes_with_options(str(bad))


def test_ld_nodfl_turns_the_student_dfl_off_and_cfg_options_still_win(repo):
    from distill.cli.train_distill import build_distill_config
    teacher = (str(repo / 'configs/tiny/gfl_l_digits.py'),
               str(repo / 'checkpoints/gfl_l_digits_e24_seed0.pth'))
    cfg = build_distill_config(str(repo / 'configs/tiny/gfl_s_digits.py'), 'ld_nodfl', *teacher)
    assert cfg.model.architecture.bbox_head.loss_dfl.loss_weight == 0.0
    cfg = build_distill_config(str(repo / 'configs/tiny/gfl_s_digits.py'), 'ld_nodfl', *teacher,
                               cfg_options={'model.bbox_head.loss_dfl.loss_weight': 0.1})
    assert cfg.model.architecture.bbox_head.loss_dfl.loss_weight == 0.1
