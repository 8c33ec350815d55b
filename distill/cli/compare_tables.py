"""The tables and charts of ``compare.py``: one table per budget and the schedule table.

A grid's results are ``{recipe: {seed: metrics}}`` (mmdet ``coco/*`` keys; a run's metrics
carry ``paired_init: True`` when its student started from the seed's shared initial weights,
:mod:`distill.graph.rng`). Per budget, ``comparison.{md,csv,png}``: mean ± sample sd over
seeds, the difference to ``none`` (unpaired: in units of ``sqrt(sd_r^2 + sd_none^2)``, and its
Welch 95 % interval) and the per-seed (paired) difference with its mean, sd and t interval.
Over several budgets, ``schedule.{md,csv,png}``: each recipe's difference to ``none`` per
budget, the plain student's and the teacher's AP, and whether the shortest budget ranks the
recipes as the longest does (Kendall's tau-b, the best recipe).
"""

from __future__ import annotations

import csv
import math
import statistics

from distill.cli.common import COCO_NAMES, coco_row
from distill.comparison import paired_difference, ranking_agreement, unpaired_difference

NAN = float('nan')


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample sd of the non-NaN values (NaN where undefined)."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return NAN, NAN
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else NAN


def _runs(runs) -> dict:
    """``{seed: metrics}`` from such a dict or from a list (seeds 0, 1, ...)."""
    return dict(runs) if isinstance(runs, dict) else dict(enumerate(runs))


def summarise(results: dict) -> dict[str, dict]:
    """Per recipe: ``n``, ``<metric>`` mean and ``<metric>_sd`` over seeds (percent), and the
    differences to ``none`` (``unpaired``, ``paired``: see :mod:`distill.comparison`; the
    paired one over the seeds where both runs started from the shared student)."""
    out = {}
    runs = {r: _runs(v) for r, v in results.items()}
    rows = {r: {s: coco_row(m) for s, m in by_seed.items()} for r, by_seed in runs.items()}
    pairable = {r: {s: row['AP'] for s, row in rows[r].items()
                    if r == 'none' or runs[r][s].get('paired_init')} for r in rows}
    base = rows.get('none')
    for recipe, by_seed in rows.items():
        summary = {'n': len(by_seed)}
        for name in COCO_NAMES:
            summary[name], summary[f'{name}_sd'] = _mean_std([r[name] for r in
                                                              by_seed.values()])
        if base is not None and recipe != 'none':
            summary['unpaired'] = unpaired_difference(
                [r['AP'] for r in by_seed.values()], [r['AP'] for r in base.values()])
            summary['paired'] = paired_difference(pairable[recipe], pairable['none'])
        out[recipe] = summary
    return out


def _fmt(mean: float, sd: float) -> str:
    if math.isnan(mean):
        return 'n/a'
    return f'{mean:.1f}' if math.isnan(sd) else f'{mean:.1f} ± {sd:.1f}'


def _interval(d: dict | None) -> str:
    if d is None or math.isnan(d['lo']):
        return 'n/a'
    return f'[{d["lo"]:+.1f}, {d["hi"]:+.1f}]'


def _paired_cell(p: dict | None) -> str:
    if p is None:
        return 'n/a'
    return f'{p["mean"]:+.1f}' + ('' if math.isnan(p['sd']) else f' ± {p["sd"]:.1f}') + \
        f' ({p["n"]})'


def write_tables(summary: dict, teacher: dict | None, prefix: str, title: str) -> str:
    """Write ``prefix.md``/``.csv``/``.png``; returns the Markdown table."""
    base = summary.get('none')
    head = ['model', 'seeds'] + list(COCO_NAMES) + [
        'ΔAP vs none', 'Δ / sd', '95 % CI (unpaired)', 'paired Δ ± sd (pairs)',
        '95 % CI (paired)']
    lines = [f'**{title}**', '', '| ' + ' | '.join(head) + ' |',
             '|' + '|'.join(['---'] * len(head)) + '|']
    csv_rows = []
    if teacher is not None:
        row = coco_row(teacher)
        lines.append('| teacher | 1 | ' + ' | '.join(_fmt(row[k], NAN) for k in COCO_NAMES)
                     + ' |' + ' |' * 5)
        csv_rows.append(dict(model='teacher', seeds=1, **row))
    for recipe, s in summary.items():
        delta = z = ci = paired = paired_ci = ''
        extra = {}
        if base is not None and recipe != 'none':
            d = s['AP'] - base['AP']
            sd = math.sqrt((s['AP_sd'] ** 2 if s['n'] > 1 else 0)
                           + (base['AP_sd'] ** 2 if base['n'] > 1 else 0))
            delta = f'{d:+.1f}'
            z = f'{d / sd:+.1f}' if sd > 0 else 'n/a'
            ci, p = _interval(s['unpaired']), s['paired']
            paired, paired_ci = _paired_cell(p), _interval(p)
            extra = dict(delta=d, unpaired_lo=s['unpaired']['lo'], unpaired_hi=s['unpaired']['hi'])
            if p is not None:
                extra.update(paired_n=p['n'], paired_mean=p['mean'], paired_sd=p['sd'],
                             paired_lo=p['lo'], paired_hi=p['hi'])
        label = 'student (none)' if recipe == 'none' else f'student + {recipe}'
        lines.append(f'| {label} | {s["n"]} | '
                     + ' | '.join(_fmt(s[k], s[f'{k}_sd']) for k in COCO_NAMES)
                     + f' | {delta} | {z} | {ci} | {paired} | {paired_ci} |')
        csv_rows.append(dict(model=recipe, seeds=s['n'], **{k: s[k] for k in COCO_NAMES},
                             **{f'{k}_sd': s[f'{k}_sd'] for k in COCO_NAMES}, **extra))
    table = '\n'.join(lines) + '\n'
    with open(prefix + '.md', 'w') as f:
        f.write(table)
    fields = ['model', 'seeds'] + list(COCO_NAMES) + [f'{k}_sd' for k in COCO_NAMES] + [
        'delta', 'unpaired_lo', 'unpaired_hi', 'paired_n', 'paired_mean', 'paired_sd',
        'paired_lo', 'paired_hi']
    _write_csv(prefix + '.csv', fields, csv_rows)
    _bar_chart(summary, teacher, prefix + '.png', title)
    return table


def _write_csv(path: str, fields: list[str], rows: list[dict]) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f'{v:.2f}' if isinstance(v, float) else v)
                             for k, v in row.items()})


def _bar_chart(summary: dict, teacher: dict | None, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = list(summary)
    means = [summary[n]['AP'] for n in names]
    sds = [0 if math.isnan(summary[n]['AP_sd']) else summary[n]['AP_sd'] for n in names]
    fig, ax = plt.subplots(figsize=(1.4 * len(names) + 2, 3.6), dpi=120)
    ax.bar(names, means, yerr=sds, capsize=4, color='#4c72b0')
    if teacher is not None:
        ax.axhline(coco_row(teacher)['AP'], color='#c44e52', ls='--', label='teacher')
        ax.legend(loc='lower right')
    lo = min(means) - 3 * max(sds + [1.0])
    ax.set_ylim(max(0.0, lo), None)
    ax.set_ylabel('COCO AP (mean ± sd over seeds)')
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _delta(s: dict) -> tuple[float, float, float, float, str]:
    """ΔAP vs none with its sd and 95 % interval: paired where 2+ pairs exist, else unpaired
    (sd: ``sqrt(sd_r^2 + sd_none^2)``, Welch's interval)."""
    p = s.get('paired')
    if p is not None and p['n'] > 1:
        return p['mean'], p['sd'], p['lo'], p['hi'], 'paired'
    u = s['unpaired']
    return u['mean'], NAN, u['lo'], u['hi'], 'unpaired'


def write_schedule(summaries: dict[int, dict], teacher: dict | None, prefix: str,
                   title: str) -> str:
    """``prefix.{md,csv,png}`` over budgets; returns the Markdown (table and sentence).

    Args:
        summaries (dict[int, dict]): Per budget (epochs), :func:`summarise`'s result.
        teacher (dict, optional): The teacher's metrics.
        prefix (str): Output path without extension.
        title (str): First line of the Markdown.
    """
    budgets = sorted(summaries)
    recipes = [r for r in dict.fromkeys(r for b in budgets for r in summaries[b]) if r != 'none']
    head = ['model'] + [f'{b} epochs' for b in budgets]
    lines = [f'**{title}**', '', 'ΔAP vs none, mean ± sd over seeds (paired: per-seed '
             'differences; * unpaired), and the 95 % interval', '',
             '| ' + ' | '.join(head) + ' |', '|' + '|'.join(['---'] * len(head)) + '|']
    rows = []
    if teacher is not None:
        ap = coco_row(teacher)['AP']
        lines.append('| teacher AP | ' + ' | '.join(f'{ap:.1f}' for _ in budgets) + ' |')
    none = [summaries[b].get('none') for b in budgets]
    lines.append('| student (none) AP | ' + ' | '.join(
        _fmt(s['AP'], s['AP_sd']) if s else 'n/a' for s in none) + ' |')
    for b, s in zip(budgets, none):
        if s:
            rows.append(dict(model='none', epochs=b, seeds=s['n'], AP=s['AP'], AP_sd=s['AP_sd']))
    for r in recipes:
        cells = []
        for b in budgets:
            s = summaries[b].get(r)
            if s is None or 'unpaired' not in s:
                cells.append('n/a')
                continue
            mean, sd, lo, hi, kind = _delta(s)
            ci = '' if math.isnan(lo) else f' [{lo:+.1f}, {hi:+.1f}]'
            sd_text = '' if math.isnan(sd) else f' ± {sd:.1f}'
            cells.append(f'{mean:+.1f}{sd_text}{"" if kind == "paired" else "*"}{ci}')
            rows.append(dict(model=r, epochs=b, seeds=s['n'], AP=s['AP'], AP_sd=s['AP_sd'],
                             delta=mean, delta_sd=sd, lo=lo, hi=hi, kind=kind))
        lines.append(f'| {r} | ' + ' | '.join(cells) + ' |')
    sentence = predicts_sentence(summaries)
    md = '\n'.join(lines) + '\n\n' + sentence + '\n'
    with open(prefix + '.md', 'w') as f:
        f.write(md)
    _write_csv(prefix + '.csv', ['model', 'epochs', 'seeds', 'AP', 'AP_sd', 'delta',
                                 'delta_sd', 'lo', 'hi', 'kind'], rows)
    _schedule_chart(summaries, recipes, teacher, prefix + '.png', title)
    return md


def predicts_sentence(summaries: dict[int, dict]) -> str:
    """Whether the shortest budget ranks the recipes (``none`` included, by mean AP) as the
    longest does."""
    budgets = sorted(summaries)
    if len(budgets) < 2:
        return ''
    short, long = budgets[0], budgets[-1]
    agree = ranking_agreement({r: s['AP'] for r, s in summaries[short].items()},
                              {r: s['AP'] for r, s in summaries[long].items()})
    tau = 'n/a' if math.isnan(agree['tau']) else f'{agree["tau"]:+.2f}'
    same = 'the same' if agree['same_best'] else 'not the same'
    return (f'{short} epochs vs {long} epochs: Kendall\'s tau-b of the mean APs of '
            f'{len(agree["recipes"])} recipes (none included) = {tau}; the best recipe is '
            f'{agree["best_short"]} at {short} epochs and {agree["best_long"]} at {long} epochs '
            f'({same}).')


def _schedule_chart(summaries, recipes, teacher, path, title) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    budgets = sorted(summaries)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.axhline(0, color='#444444', lw=1, label='none')
    for k, r in enumerate(recipes):
        xs, ys, err = [], [], [[], []]
        for b in budgets:
            s = summaries[b].get(r)
            if s is None or 'unpaired' not in s:
                continue
            mean, _, lo, hi, _ = _delta(s)
            # a small sideways shift per recipe keeps the error bars apart
            xs.append(b * (1 + 0.02 * (k - len(recipes) / 2)))
            ys.append(mean)
            err[0].append(0 if math.isnan(lo) else mean - lo)
            err[1].append(0 if math.isnan(hi) else hi - mean)
        ax.errorbar(xs, ys, yerr=err, marker='o', capsize=3, label=r)
    ax.set_xscale('log')
    ax.set_xticks(budgets)
    ax.set_xticklabels([str(b) for b in budgets])
    ax.set_xticks([], minor=True)  # the log scale's own minor labels (e.g. '2 x 10^1') would clash
    ax.set_xlabel('training budget (epochs)')
    ax.set_ylabel('ΔAP vs none (95 % interval)')
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
