"""A two-component 1-D Gaussian mixture fitted by EM for many groups at once (MOD's APS, Sec. 3.2:
the GMM on the scores S of each GT's candidates splits positives from negatives).

The published code fits scikit-learn's ``GaussianMixture`` once per GT on the CPU (a
device-to-host copy and sync per GT). This fits every GT of a batch together on the scores'
device, with the same EM as scikit-learn's defaults for that call (``n_components=2``,
``covariance_type='full'``, which is a variance in 1-D, ``reg_covar=1e-6``, ``tol=1e-3``,
``max_iter=100``; initialised as the published code: weights ``[0.5, 0.5]``, means at the
group's min and max score, precisions 1): each group stops updating once its mean
log-likelihood changes by less than ``tol``, as scikit-learn stops; the loop checks whether
every group has stopped every ``check_every`` iterations (on a GPU one host sync per check,
per batch, never per group) and ends there.

:func:`gmm_split` runs the same EM compiled (``ops/csrc/gmm_split``, one group per task, in
float64) on the CPU where ``distill._C`` is built: the batched loop is ~30 tensor ops per
iteration on tensors of a few hundred values, mostly dispatch overhead there. Elsewhere, and
inside ``use_compiled(False)``, :func:`gmm_split_batched` runs. Both are tested against
scikit-learn (tests/models/test_batched_gmm.py).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from distill.ops.extension import compiled_enabled, load_extension

_C, _ = load_extension()


def _log_prob(x: Tensor, means: Tensor, variances: Tensor, log_weights: Tensor) -> Tensor:
    """Weighted log densities ``log w_k + log N(x; mu_k, var_k)``.

    Args:
        x (Tensor[G, M]): Scores.
        means, variances, log_weights (Tensor[G, 2]): Per group and component.

    Returns:
        Tensor[G, M, 2].
    """
    diff = x[..., None] - means[:, None, :]
    return (log_weights[:, None, :] - 0.5 * (math.log(2 * math.pi) + variances.log()[:, None, :])
            - 0.5 * diff.square() / variances[:, None, :])


def gmm_split(scores: Tensor, valid: Tensor, *, max_iter: int = 100, tol: float = 1e-3,
              reg_covar: float = 1e-6, check_every: int | None = None) -> Tensor:
    """Fit a 2-component GMM to each group's valid scores; which belong to the low component.

    The compiled kernel on the CPU where built, else :func:`gmm_split_batched` (same arguments
    and result; ``check_every`` only concerns the batched loop).
    """
    if _C is not None and compiled_enabled() and scores.device.type == 'cpu':
        return torch.ops.distill.gmm_split(scores.double(), valid.bool(), max_iter, tol,
                                           reg_covar)
    return gmm_split_batched(scores, valid, max_iter=max_iter, tol=tol, reg_covar=reg_covar,
                             check_every=check_every)


def gmm_split_batched(scores: Tensor, valid: Tensor, *, max_iter: int = 100, tol: float = 1e-3,
                      reg_covar: float = 1e-6, check_every: int | None = None) -> Tensor:
    """Fit a 2-component GMM to each group's valid scores; which belong to the low component:
    every group at once in tensor ops (any device).

    Args:
        scores (Tensor[G, M]): Scores of up to M candidates per group (one group per GT).
        valid (Tensor[G, M]): Which entries are candidates (bool).
        max_iter (int): EM iterations (scikit-learn's default, 100).
        tol (float): A group stops when its mean log-likelihood changes by less than this.
        reg_covar (float): Added to each variance (scikit-learn's default).
        check_every (int, optional): Stop early once every group has converged, checked every
            this many iterations (0: always run ``max_iter``; the result is the same either
            way, since a converged group no longer changes). Default: every iteration on the
            CPU (a check costs nothing there), every 10 elsewhere (a check is a host sync).

    Returns:
        Tensor[G, M] (bool): Candidates assigned to the component initialised at the group's
        minimum score (the positives of APS, whose low S is good), as scikit-learn's
        ``predict`` after ``fit``; False where not valid. A group with one candidate keeps it.
    """
    x = scores.double()  # scikit-learn fits in float64
    g, m = x.shape
    if g == 0 or m == 0:
        return valid.clone()
    mask = valid.to(x.dtype)
    count = mask.sum(1)  # [G]
    big = torch.finfo(x.dtype).max
    lo = torch.where(valid, x, x.new_tensor(big)).amin(1)
    hi = torch.where(valid, x, x.new_tensor(-big)).amax(1)
    means = torch.stack([lo, hi], 1)
    variances = torch.ones_like(means)
    log_weights = torch.full_like(means, math.log(0.5))
    lower_bound = torch.full_like(lo, -math.inf)
    active = count >= 2
    eps = 10 * torch.finfo(x.dtype).eps  # scikit-learn's guard on the component sums
    if check_every is None:
        check_every = 1 if x.device.type == 'cpu' else 10
    xe, me = x[..., None], mask[..., None]  # [G, M, 1]
    for it in range(max_iter):
        if check_every and it % check_every == 0 and not bool(active.any()):
            break
        # E-step with the current parameters: log w_k + log N(x; mu_k, var_k), and its
        # log-sum over the two components written out (torch.logsumexp is 6 ops, and every
        # op here is mostly dispatch overhead at APS's sizes)
        weighted = _log_prob(x, means, variances, log_weights)  # [G, M, 2]
        w0, w1 = weighted.unbind(-1)
        top = torch.maximum(w0, w1)
        norm = top + ((w0 - top).exp_() + (w1 - top).exp_()).log_()  # [G, M]
        resp = (weighted - norm[..., None]).exp_().mul_(me)
        new_bound = (norm * mask).sum(1) / count.clamp(min=1)
        # M-step
        nk = resp.sum(1) + eps  # [G, 2]
        new_means = (resp * xe).sum(1) / nk
        new_vars = (resp * (xe - new_means[:, None, :]).square_()).sum(1) / nk + reg_covar
        new_log_w = (nk / count.clamp(min=1)[:, None]).log()
        upd = active[:, None]
        means = torch.where(upd, new_means, means)
        variances = torch.where(upd, new_vars, variances)
        log_weights = torch.where(upd, new_log_w, log_weights)
        converged = (new_bound - lower_bound).abs() < tol
        lower_bound = torch.where(active, new_bound, lower_bound)
        active = active & ~converged
    low = _log_prob(x, means, variances, log_weights).argmax(-1) == 0
    single = (count == 1)[:, None]
    return valid & (low | single)
