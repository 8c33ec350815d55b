"""tools/grid_stats.py on a hand-written grid: gradient norms, clipping share, loss means."""

import json

import pytest

from distill.cli import grid_stats
from distill.errors import ConfigError


def _run(folder, records, clip=None):
    """A run folder as mmengine writes it: a dumped config and one scalars.json."""
    vis = folder / '20260101_000000' / 'vis_data'
    vis.mkdir(parents=True)
    vis.joinpath('scalars.json').write_text('\n'.join(json.dumps(r) for r in records) + '\n')
    clip_cfg = 'None' if clip is None else f'dict(max_norm={clip}, norm_type=2)'
    folder.joinpath('gfl.py').write_text(f'optim_wrapper = dict(clip_grad={clip_cfg})\n')


def _train(step, epoch, norm, **losses):
    return dict(lr=1e-3, grad_norm=norm, epoch=epoch, iter=step, step=step, **losses)


@pytest.fixture
def grid(tmp_path):
    _run(tmp_path / 'kd' / 'seed0', [
        _train(20, 1, 4.0, loss=3.0, loss_cls=1.0, loss_main_kd=2.0),
        _train(40, 1, 12.0, loss=2.0, loss_cls=0.5, loss_main_kd=1.5),
        dict(**{'coco/bbox_mAP': 0.1}, step=1),
        _train(60, 2, 11.0, loss=1.0, loss_cls=0.25, loss_main_kd=0.75)], clip=10)
    _run(tmp_path / 'kd' / 'seed1', [
        _train(20, 1, 2.0, loss=1.0, loss_cls=1.0, loss_main_kd=0.0),
        _train(40, 2, 8.0, loss=0.5, loss_cls=0.25, loss_main_kd=0.25)], clip=10)
    _run(tmp_path / 'none' / 'seed0', [_train(20, 1, 3.0, loss=1.0, loss_cls=1.0)])
    return tmp_path


def test_recipe_stats_by_hand(grid):
    s = grid_stats.recipe_stats(sorted(str(p) for p in (grid / 'kd').glob('seed*')))
    assert s['runs'] == 2
    assert s['median_norm'] == pytest.approx(8.0)  # median of 4, 12, 11, 2, 8
    assert s['above_clip'] == pytest.approx(2 / 5)  # 12 and 11 > 10
    # first epoch: seed0's two windows and seed1's one; last: seed0's epoch 2 and seed1's
    assert s['losses']['first']['loss_cls'] == pytest.approx((1.0 + 0.5 + 1.0) / 3)
    assert s['losses']['first']['loss_main_kd'] == pytest.approx((2.0 + 1.5 + 0.0) / 3)
    assert s['losses']['last']['loss_main_kd'] == pytest.approx((0.75 + 0.25) / 2)


def test_table_and_clip_sources(grid, capsys):
    out = grid_stats.main([str(grid)])
    assert out == capsys.readouterr().out.strip()
    kd, none = out.splitlines()[2:]
    assert kd.startswith('| kd | 2 | 8.0 | 40 % | loss_cls 0.833 -> 0.250, '
                         'loss_main_kd 1.167 -> 0.500 |')
    assert none.startswith('| none | 1 | 3.0 | 0 % |')  # no clip in its config
    # --clip overrides the dumped configs: 4 of the 5 kd windows are above 3
    assert '| kd | 2 | 8.0 | 80 % |' in grid_stats.main([str(grid), '--clip', '3'])


def test_refusals_name_the_folder(grid, tmp_path):
    with pytest.raises(ConfigError, match=r"no runs of \['pkd'\]"):
        grid_stats.table(str(grid), ['pkd'])
    for cfg in (grid / 'kd' / 'seed0').glob('*.py'):
        cfg.unlink()
    with pytest.raises(ConfigError, match=r'kd/seed0: no dumped config .* give --clip'):
        grid_stats.table(str(grid), ['kd'])
    with pytest.raises(ConfigError, match='not a directory'):
        grid_stats.main([str(tmp_path / 'nowhere')])
