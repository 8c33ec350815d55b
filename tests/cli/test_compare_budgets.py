"""compare.py over several budgets, on hand-made finished runs: one table per budget, the
schedule table and chart, Kendall's tau and the paired statistics against hand computations,
and runs of the single-budget layout read for their budget."""

import csv
import json
import math

import pytest

from distill.cli import compare
from distill.comparison import kendall_tau, paired_difference, unpaired_difference

T975_DF2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom
T975_DF4 = 2.7764451051977987


def test_paired_difference_by_hand():
    none = {0: 12.0, 1: 14.0, 2: 16.0}
    recipe = {0: 15.0, 1: 17.0, 2: 19.5, 3: 30.0}  # seed 3 has no pair: left out
    p = paired_difference(recipe, none)
    # differences 3, 3, 3.5: mean 19/6, sample sd sqrt(1/12)
    assert p['n'] == 3 and p['seeds'] == [0, 1, 2]
    assert p['mean'] == pytest.approx(19 / 6) and p['sd'] == pytest.approx(math.sqrt(1 / 12))
    half = T975_DF2 * math.sqrt(1 / 12) / math.sqrt(3)
    assert (p['lo'], p['hi']) == pytest.approx((19 / 6 - half, 19 / 6 + half))
    one = paired_difference({0: 2.0}, {0: 1.0})
    assert one['mean'] == 1.0 and math.isnan(one['sd']) and math.isnan(one['lo'])
    assert paired_difference({1: 2.0}, {0: 1.0}) is None


def test_unpaired_difference_by_hand():
    # variances 1 and 1 over 3 values each: se sqrt(2/3), Welch df = 4
    u = unpaired_difference([15.0, 16.0, 17.0], [12.0, 13.0, 14.0])
    half = T975_DF4 * math.sqrt(2 / 3)
    assert u['mean'] == pytest.approx(3.0)
    assert (u['lo'], u['hi']) == pytest.approx((3 - half, 3 + half))


def test_kendall_tau_by_hand_and_against_scipy():
    from scipy.stats import kendalltau
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)  # 5 conc., 1 disc.
    # a tie in x: 2 concordant, 0 discordant, tau-b = 2 / sqrt(3 * 2)
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    xs, ys = [3.1, 0.2, 5.5, 2.0, 2.0, 9.1], [1.0, 4.0, 2.5, 2.5, 0.3, 7.7]
    assert kendall_tau(xs, ys) == pytest.approx(kendalltau(xs, ys).statistic)
    assert math.isnan(kendall_tau([1, 1], [2, 3]))


def _run(folder, ap, epochs=None, paired=True, legacy_step=None):
    """A finished run: final_metrics.json and the scalars its curves read."""
    folder.mkdir(parents=True)
    metrics = {'coco/bbox_mAP': ap / 100, 'coco/bbox_mAP_50': ap / 100, 'coco/bbox_mAP_75': 0.1,
               'coco/bbox_mAP_s': 0.1, 'coco/bbox_mAP_m': 0.1, 'coco/bbox_mAP_l': -1.0}
    last = epochs or legacy_step
    record = dict(metrics, step=last)
    if epochs is not None:
        record.update(epochs=epochs, paired_init=paired)
    (folder / 'final_metrics.json').write_text(json.dumps(record))
    vis = folder / '20260101_000000' / 'vis_data'
    vis.mkdir(parents=True)
    lines = [dict(loss=2.0 / (e + 1), lr=0.01, epoch=e + 1, step=e + 1) for e in range(last)]
    lines.append(dict(metrics, step=last))
    (vis / 'scalars.json').write_text('\n'.join(json.dumps(x) for x in lines) + '\n')


AP = {6: {'none': [12, 14, 16], 'kd': [20, 22, 21], 'pkd': [15, 17, 19.5]},
      24: {'none': [36, 38, 37], 'kd': [33, 35, 34], 'pkd': [39, 41, 40.5]}}


@pytest.fixture
def grid(tmp_path):
    root = tmp_path / 'grid'
    for seed in range(3):
        # 6 epochs: none and kd in the single-budget layout (kd from before paired seeding:
        # no paired_init), pkd in e6/
        _run(root / 'none' / f'seed{seed}', AP[6]['none'][seed], legacy_step=6)
        _run(root / 'kd' / f'seed{seed}', AP[6]['kd'][seed], legacy_step=6)
        _run(root / 'e6' / 'pkd' / f'seed{seed}', AP[6]['pkd'][seed], epochs=6)
        for r in ('none', 'kd', 'pkd'):
            _run(root / 'e24' / r / f'seed{seed}', AP[24][r][seed], epochs=24)
    return root


def test_several_budgets_tables_schedule_and_tau(grid, repo, capsys):
    compare.main(['--student', str(repo / 'configs/tiny/gfl_s_digits.py'), '--recipes', 'none',
                  'kd', 'pkd', '--seeds', '0', '1', '2', '--epochs', '6', '24', '--work-root',
                  str(grid), '--collect-only'])
    out = capsys.readouterr().out
    assert out.count('reused (single-budget layout)') == 6  # none and kd at 6 epochs
    for b in (6, 24):
        for ext in ('md', 'csv', 'png'):
            assert (grid / f'e{b}' / f'comparison.{ext}').stat().st_size > 0
    rows = {r['model']: r for r in csv.DictReader(open(grid / 'e6' / 'comparison.csv'))}
    assert float(rows['kd']['AP']) == pytest.approx(21.0)
    assert rows['kd']['paired_n'] == ''  # no pairs: kd's runs predate paired seeding
    assert float(rows['pkd']['paired_mean']) == pytest.approx(19 / 6, abs=0.01)
    half = T975_DF2 * math.sqrt(1 / 12) / math.sqrt(3)
    assert float(rows['pkd']['paired_lo']) == pytest.approx(19 / 6 - half, abs=0.01)
    md6 = (grid / 'e6' / 'comparison.md').read_text()
    pkd_cells = [c.strip() for c in next(r for r in md6.splitlines()
                                         if r.startswith('| student + pkd')).split('|')[1:-1]]
    assert pkd_cells[-2] == '+3.2 ± 0.3 (3)'
    assert pkd_cells[-1] == f'[{19 / 6 - half:+.1f}, {19 / 6 + half:+.1f}]'

    md = (grid / 'schedule.md').read_text()
    # 6 epochs rank kd (21) > pkd (17.2) > none (14); 24 epochs pkd (40.2) > none (37) > kd
    # (34): pairs (none, kd) and (kd, pkd) discordant, (none, pkd) concordant: tau = -1/3
    assert ("Kendall's tau-b of the mean APs of 3 recipes (none included) = -0.33; the best "
            'recipe is kd at 6 epochs and pkd at 24 epochs (not the same).') in md
    assert '| student (none) AP | 14.0 ± 2.0 | 37.0 ± 1.0 |' in md
    kd_row = next(r for r in md.splitlines() if r.startswith('| kd |'))
    assert kd_row.split('|')[2].strip().startswith('+7.0*')  # unpaired at 6 epochs
    assert kd_row.split('|')[3].strip().startswith('-3.0 ± 0.0 [')  # paired at 24
    sched = list(csv.DictReader(open(grid / 'schedule.csv')))
    pkd24 = next(r for r in sched if r['model'] == 'pkd' and r['epochs'] == '24')
    assert pkd24['kind'] == 'paired' and float(pkd24['delta']) == pytest.approx(19 / 6,
                                                                                abs=0.01)
    assert (grid / 'schedule.png').stat().st_size > 0


def test_one_budget_keeps_the_single_layout(grid, repo):
    table = compare.main(['--student', str(repo / 'configs/tiny/gfl_s_digits.py'), '--recipes',
                          'none', 'kd', '--seeds', '0', '1', '2', '--epochs', '6', '--work-root',
                          str(grid), '--collect-only'])
    assert (grid / 'comparison.md').is_file() and not (grid / 'schedule.md').exists()
    assert '| student + kd | 3 | 21.0 ± 1.0 |' in table


def test_a_budget_given_twice_is_refused(grid, repo):
    from distill.errors import DistillError
    with pytest.raises(DistillError, match='--epochs 6 6: a budget is given twice'):
        compare.main(['--student', str(repo / 'configs/tiny/gfl_s_digits.py'), '--recipes',
                      'none', '--epochs', '6', '6', '--work-root', str(grid), '--collect-only'])
