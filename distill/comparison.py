"""Statistics of a comparison grid: paired and unpaired differences to the plain student, and
how well one training budget's ranking of the recipes predicts another's.

A run's seed fixes the student's initial weights and its data order whatever the recipe
(:mod:`distill.graph.rng`), so the runs of two recipes at one seed are a pair: their difference
removes what the seed alone does to AP. :func:`paired_difference` gives the mean, sd and a
Student-t 95 % interval of the per-seed differences; :func:`unpaired_difference` the same
interval from the two groups' means and sds (Welch), for comparison. :func:`kendall_tau`
compares two rankings.
"""

from __future__ import annotations

import math
import statistics


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (scipy's)."""
    from scipy.stats import t
    return float(t.ppf(p, df))


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict | None:
    """Per-seed differences ``a[s] - b[s]`` over the seeds both have.

    Args:
        a (dict[int, float]): A recipe's AP per seed.
        b (dict[int, float]): The reference's (``none``) AP per seed.

    Returns:
        dict | None: ``n``, ``mean``, ``sd`` (sample, NaN for one pair), ``lo`` and ``hi`` (the
        95 % t interval of the mean, NaN for one pair) and ``seeds``; None without a common
        seed.
    """
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    d = [a[s] - b[s] for s in seeds]
    n, mean = len(d), statistics.fmean(d)
    sd = statistics.stdev(d) if n > 1 else float('nan')
    half = t_quantile(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else float('nan')
    return dict(n=n, mean=mean, sd=sd, lo=mean - half, hi=mean + half, seeds=seeds)


def unpaired_difference(a: list[float], b: list[float]) -> dict | None:
    """Difference of the means of two independent groups with Welch's 95 % interval.

    Returns:
        dict | None: ``mean``, ``lo``, ``hi`` (NaN where a group has fewer than 2 values);
        None when a group is empty.
    """
    if not a or not b:
        return None
    mean = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return dict(mean=mean, lo=float('nan'), hi=float('nan'))
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return dict(mean=mean, lo=mean, hi=mean)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_quantile(0.975, df) * se
    return dict(mean=mean, lo=mean - half, hi=mean + half)


def kendall_tau(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b of two score lists over the same items (ties counted as neither
    concordant nor discordant; NaN when either list is constant or has fewer than 2 items).
    """
    if len(x) != len(y):
        raise ValueError(f'kendall_tau: {len(x)} and {len(y)} scores')
    conc = disc = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + ties_x) * (conc + disc + ties_y))
    return (conc - disc) / denom if denom else float('nan')


def ranking_agreement(short: dict[str, float], long: dict[str, float]) -> dict:
    """How the ``short`` budget's mean APs rank the recipes against the ``long`` budget's.

    Args:
        short (dict[str, float]): Mean AP per recipe at the shortest budget (``none`` included).
        long (dict[str, float]): The same at the longest budget.

    Returns:
        dict: ``recipes`` (those at both budgets), ``tau`` (Kendall's tau-b of their mean
        APs), ``best_short``, ``best_long`` and ``same_best``.
    """
    names = [r for r in short if r in long]
    tau = kendall_tau([short[r] for r in names], [long[r] for r in names])
    best_s = max(names, key=lambda r: short[r]) if names else None
    best_l = max(names, key=lambda r: long[r]) if names else None
    return dict(recipes=names, tau=tau, best_short=best_s, best_long=best_l,
                same_best=best_s == best_l)
