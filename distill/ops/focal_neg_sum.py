"""Each location's sigmoid focal loss with every class as a negative, summed over the classes.

``out[r] = (1 - alpha) * sum_c sigmoid(x_rc)^gamma * softplus(x_rc)``: the focal loss (Lin et
al., Eq. 5) of a class whose target is 0, since ``-log(1 - p) = softplus(x)``. MOD's APS
(:class:`~distill.models.assigners.APSAssigner`) scores every location as a positive of every GT
from it: ``sum_c FL_neg(x_c) - FL_neg(x_y) + FL_pos(x_y)``.

Two implementations behind one interface:

* ``torch.ops.distill.focal_neg_sum`` (``ops/csrc/focal_neg_sum``): one pass, no temporary,
  ``exp`` and ``log1p`` shared by the sigmoid and the softplus, vectorised over classes and
  parallel over rows. CPU, float32, ``gamma = 2``.
* :func:`focal_neg_sum_reference`: PyTorch ops, the definition the kernel is tested against
  (relative difference below 1e-5). It runs everywhere else: on CUDA (where PyTorch's own
  elementwise kernels are not the bottleneck), for other dtypes or gammas, when the extension
  is not built, or inside :func:`~distill.ops.extension.use_compiled` ``(False)``.

Neither gives a gradient (both read the detached logits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.ops.extension import compiled_enabled, load_extension

_C, _ = load_extension()


def focal_neg_sum_reference(logits: Tensor, gamma: float = 2.0, alpha: float = 0.25) -> Tensor:
    """The sum in PyTorch ops, in place on its temporaries (``p^2`` as a product, ``(1 - alpha)``
    after the sum). No gradient: it reads ``logits.detach()``.

    Args:
        logits (Tensor[..., C]): Class logits.

    Returns:
        Tensor[...]: The sum over the last dim.
    """
    x = logits.detach()
    p = x.sigmoid()
    p = p.mul_(p) if gamma == 2 else p.pow_(gamma)
    return p.mul_(F.softplus(x)).sum(-1).mul_(1 - alpha)


def _compiled(logits: Tensor, gamma: float) -> bool:
    """Whether the kernel serves this call (else the reference, see the module docstring)."""
    return (_C is not None and compiled_enabled() and logits.device.type == 'cpu'
            and logits.dtype == torch.float32 and gamma == 2)


def focal_neg_sum(logits: Tensor, gamma: float = 2.0, alpha: float = 0.25) -> Tensor:
    """``(1 - alpha) * sum_c sigmoid(x_c)^gamma * softplus(x_c)`` over the last dim.

    Args:
        logits (Tensor[..., C]): Class logits.
        gamma (float): Focal loss gamma.
        alpha (float): Focal loss alpha (0 for QFL, whose negatives carry no alpha).

    Returns:
        Tensor[...]: One sum per location, without gradient (the input is detached: APS
        scores detached predictions).
    """
    if not _compiled(logits, gamma):
        return focal_neg_sum_reference(logits, gamma, alpha)
    rows = logits.shape[:-1].numel()
    flat = logits.detach().reshape(rows, logits.shape[-1])
    return torch.ops.distill.focal_neg_sum(flat, float(gamma), float(alpha)).view(
        logits.shape[:-1])


if _C is not None:
    @torch.library.register_fake('distill::focal_neg_sum')
    def _focal_neg_sum_fake(logits: Tensor, gamma: float, alpha: float) -> Tensor:
        return logits.new_empty(logits.shape[0])
