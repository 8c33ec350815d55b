"""Small helpers shared by tests (real models and data, no mocks)."""

import torch
from mmengine.dataset import pseudo_collate

from distill.build import build_train_parts


def train_iterations(cfg, iterations=10, batch_size=2, subset=20, seed=0):
    """Train ``cfg.model`` for a few iterations on its train dataset, checking every step.

    Returns:
        tuple: ``losses (list[float])`` and ``touched (dict[str, bool])``: whether each
        parameter received a non-zero gradient in some iteration. Raises AssertionError on a
        non-finite loss or gradient, or a trainable parameter without a gradient.
    """
    model, dataset, optim = build_train_parts(cfg, subset, seed)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    touched = dict.fromkeys(params, False)
    losses = []
    for it in range(iterations):
        batch = pseudo_collate([dataset[(batch_size * it + k) % len(dataset)]
                                for k in range(batch_size)])
        data = model.data_preprocessor(batch, True)
        loss, _ = model.parse_losses(model(**data, mode='loss'))
        assert torch.isfinite(loss), f'iteration {it}: loss {loss}'
        optim.zero_grad()
        loss.backward()
        for name, p in params.items():
            assert p.grad is not None, f'iteration {it}: {name} got no gradient'
            assert torch.isfinite(p.grad).all(), f'iteration {it}: {name} non-finite gradient'
            touched[name] |= bool(p.grad.abs().sum() > 0)
        optim.step()
        losses.append(float(loss))
    return losses, touched
