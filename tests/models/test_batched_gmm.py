"""APS's two-component GMM against scikit-learn's ``GaussianMixture`` fitted per group with the
published code's initialisation (weights 0.5, means at min / max, precisions 1): both forms,
the compiled kernel (``ops/csrc/gmm_split``, what the CPU runs) and the batched PyTorch loop
(``use_compiled(False)``, what other devices run)."""

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

from distill.models.assigners import gmm_split, gmm_split_batched
from distill.ops.extension import use_compiled
from distill.ops.point_sample import compiled_available

M = 18  # 2 levels x top-9 candidates per GT in APS

FORMS = [pytest.param(True, id='compiled', marks=pytest.mark.skipif(
    not compiled_available('cpu'), reason='distill._C is not built')),
    pytest.param(False, id='batched')]


def _cases(seed, count=400):
    """Scores of 2-18 candidates per group: uniform, two well-separated clusters (clear-cut),
    skewed beta, and a product-of-uniforms shape like sqrt(S_u * S_m)."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        n = int(rng.integers(2, M + 1))
        kind = i % 4
        if kind == 0:
            s = rng.random(n)
        elif kind == 1:
            s = np.concatenate([rng.normal(0.2, 0.03, n // 2), rng.normal(0.7, 0.05, n - n // 2)])
        elif kind == 2:
            s = rng.beta(2, 5, n)
        else:
            s = np.sqrt(rng.random(n) * rng.random(n))
        cases.append((kind, s))
    return cases


def _sklearn_low(x):
    x = x[:, None]
    gm = GaussianMixture(2, weights_init=[0.5, 0.5], means_init=[[x.min()], [x.max()]],
                         precisions_init=[[[1.0]], [[1.0]]])
    return gm.fit(x).predict(x) == 0


def _pack(cases, fill=0.0):
    scores = torch.full((len(cases), M), fill)
    valid = torch.zeros(len(cases), M, dtype=torch.bool)
    for i, (_, s) in enumerate(cases):
        scores[i, :len(s)] = torch.from_numpy(s)
        valid[i, :len(s)] = True
    return scores, valid


@pytest.mark.parametrize('compiled', FORMS)
@pytest.mark.parametrize('seed', [0, 1])
def test_agrees_with_sklearn_per_group(seed, compiled):
    cases = _cases(seed)
    scores, valid = _pack(cases)
    with use_compiled(compiled):
        ours = gmm_split(scores, valid)
    same, clear, clear_same = 0, 0, 0
    for i, (kind, s) in enumerate(cases):
        # the same float32 scores as ours, in float64 as scikit-learn fits them
        want = _sklearn_low(scores[i, :len(s)].double().numpy())
        ok = bool((ours[i, :len(s)].numpy() == want).all())
        same += ok
        clear += kind == 1
        clear_same += ok and kind == 1
        assert not ours[i, len(s):].any()  # padding is never positive
    # every group, as docs/ddod_mod.md states (400/400 in each seed), the clear-cut ones too
    assert clear_same == clear, f'clear-cut groups: {clear_same}/{clear} agree'
    assert same == len(cases), f'{same}/{len(cases)} groups agree'


@pytest.mark.parametrize('compiled', FORMS)
def test_padding_values_do_not_matter(compiled):
    cases = _cases(3, 40)
    with use_compiled(compiled):
        a = gmm_split(*_pack(cases, fill=0.0))
        b = gmm_split(*_pack(cases, fill=1e6))
    assert torch.equal(a, b)


@pytest.mark.parametrize('compiled', FORMS)
def test_two_clusters_by_hand_and_single_candidates(compiled):
    scores = torch.tensor([[0.10, 0.12, 0.11, 0.80, 0.82, 0.0],
                           [0.50, 0.0, 0.0, 0.0, 0.0, 0.0],
                           [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    valid = torch.tensor([[True] * 5 + [False], [True] + [False] * 5, [False] * 6])
    with use_compiled(compiled):
        out = gmm_split(scores, valid)
        empty = gmm_split(torch.zeros(0, 4), torch.zeros(0, 4, dtype=torch.bool))
    assert out[0].tolist() == [True, True, True, False, False, False]
    assert out[1].tolist() == [True] + [False] * 5  # one candidate: kept
    assert not out[2].any()
    assert empty.shape == (0, 4)


def test_early_stop_changes_nothing():
    scores, valid = _pack(_cases(3, count=200))
    torch.testing.assert_close(gmm_split_batched(scores, valid, check_every=0),
                               gmm_split_batched(scores, valid, check_every=1), rtol=0, atol=0)


@pytest.mark.skipif(not compiled_available('cpu'), reason='distill._C is not built')
def test_compiled_equals_batched_on_awkward_groups():
    """Scattered valid entries, ties, constant groups (variance reg_covar only), groups longer
    than APS's 18, wide and tiny score ranges, and max_iter / tol other than the defaults."""
    gen = torch.Generator().manual_seed(5)
    g, m = 300, 40
    scores = torch.rand(g, m, generator=gen, dtype=torch.float64)
    scores[:50] = (scores[:50] * 4).round() / 4  # ties
    scores[50:80] = 0.3  # constant
    scores[80:120] *= 1e-4
    scores[120:160] *= 1e3
    valid = torch.rand(g, m, generator=gen) < 0.6
    valid[160:200, :2] = True
    valid[160:200, 2:] = False  # two candidates
    for kwargs in ({}, dict(max_iter=3), dict(tol=1e-8, reg_covar=1e-3)):
        want = gmm_split_batched(scores, valid, **kwargs)
        got = torch.ops.distill.gmm_split(scores, valid, kwargs.get('max_iter', 100),
                                          kwargs.get('tol', 1e-3),
                                          kwargs.get('reg_covar', 1e-6))
        assert torch.equal(got, want), f'{(got != want).any(1).sum()} groups differ, {kwargs}'
    assert torch.equal(gmm_split(scores.float(), valid), gmm_split_batched(scores.float(), valid))
