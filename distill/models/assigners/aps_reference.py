"""APS the way the published code runs it: a Python loop over images and GTs, and a
scikit-learn ``GaussianMixture`` fitted on the CPU for each GT (a device-to-host copy and sync
per GT). The reference of :class:`~distill.models.assigners.APSAssigner` in tests and in
``benchmarks/aps_assign.py``; same equations, written plainly, one GT at a time.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .aps_assigner import APSAssigner


def _sklearn_low(scores: np.ndarray) -> np.ndarray:
    """Which scores fall in the component initialised at the minimum (the published GMM)."""
    from sklearn.mixture import GaussianMixture

    if len(scores) < 2:
        return np.ones(len(scores), dtype=bool)
    x = scores[:, None].astype(np.float64)
    gm = GaussianMixture(2, weights_init=[0.5, 0.5], means_init=[[x.min()], [x.max()]],
                         precisions_init=[[[1.0]], [[1.0]]])
    return gm.fit(x).predict(x) == 0


def aps_assign_per_gt(assigner: APSAssigner, points: Tensor, num_level_points: list[int],
                      logits: Tensor, boxes: Tensor, gt_list: list[Tensor],
                      label_list: list[Tensor]) -> Tensor:
    """``gt_index (Tensor[B, N])`` as :meth:`APSAssigner.assign_batch`, one GT at a time.

    Args:
        assigner (APSAssigner): Its hyperparameters (and loss helpers) are used.
        points (Tensor[N, 2]): Locations.
        num_level_points (list[int]): Locations per level.
        logits (Tensor[B, N, C]), boxes (Tensor[B, N, 4]): Predictions.
        gt_list (list[Tensor[G_i, 4]]), label_list (list[Tensor[G_i]]): GTs of each image.
    """
    b, n = logits.shape[:2]
    starts = np.cumsum([0] + list(num_level_points))
    out = torch.full((b, n), -1, dtype=torch.long)
    for i in range(b):
        best = torch.full((n,), float('inf'))
        # the losses of every location for all of this image's GTs at once (as a head computes
        # its losses); the selection and the GMM then run GT by GT on the CPU
        l_cls_all, l_reg_all = assigner.losses(logits[i:i + 1], boxes[i:i + 1],
                                               gt_list[i][None], label_list[i][None])
        for j in range(len(gt_list[i])):
            gt = gt_list[i][j:j + 1]
            l_cls, l_reg = l_cls_all[0, j].cpu(), l_reg_all[0, j].cpu()
            total = l_cls + l_reg
            x, y = points[:, 0].cpu(), points[:, 1].cpu()
            g = gt[0].cpu()
            inside = (x > g[0]) & (x < g[2]) & (y > g[1]) & (y < g[3])
            per_level = []
            for lv in range(len(num_level_points)):
                idx = torch.arange(starts[lv], starts[lv + 1])
                idx = idx[inside[idx]]
                if len(idx) == 0:
                    continue
                order = torch.argsort(total[idx], stable=True)[:assigner.topk]
                chosen = idx[order]
                per_level.append((float(total[chosen].mean()), lv, chosen))
            per_level.sort(key=lambda t: (t[0], t[1]))
            cand = torch.cat([c for _, _, c in per_level[:assigner.num_levels]]) if per_level \
                else torch.zeros(0, dtype=torch.long)
            if len(cand) == 0:
                continue
            lc, lr = l_cls[cand], l_reg[cand]
            s_u = (torch.softmax(lc, 0) + torch.softmax(lr, 0)) / 2  # Eq. 6
            s_m = torch.sigmoid((lc - lr).abs())  # Eq. 7
            s = torch.sqrt(s_u * s_m)  # Eq. 8
            low = torch.from_numpy(_sklearn_low(s.double().numpy()))
            for k in cand[low].tolist():
                if total[k] < best[k]:
                    best[k], out[i, k] = total[k], j
    return out
