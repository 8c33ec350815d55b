"""Small helpers shared by tests (real models and data, no mocks)."""

from contextlib import contextmanager

import torch
from mmengine.dataset import pseudo_collate
from mmengine.logging import MessageHub

from distill.build import build_train_parts

#: ``--cfg-options`` of a tiny run: 8 images, batch 4 (2 iterations an epoch), no dataloader
#: workers, evaluation on 8 images only when asked for (``val_interval`` 100), every checkpoint
#: kept.
TINY_RUN = {
    'train_dataloader.dataset.indices': 8, 'train_dataloader.batch_size': 4,
    'train_dataloader.num_workers': 0, 'train_dataloader.persistent_workers': False,
    'val_dataloader.dataset.indices': 8, 'val_dataloader.num_workers': 0,
    'val_dataloader.persistent_workers': False,
    'test_dataloader.dataset.indices': 8, 'test_dataloader.num_workers': 0,
    'test_dataloader.persistent_workers': False,
    'train_cfg.val_interval': 100, 'default_hooks.checkpoint.save_best': None,
    'default_hooks.checkpoint.max_keep_ckpts': -1, 'default_hooks.logger.interval': 1,
}


def train_iterations(cfg, iterations=10, batch_size=2, subset=20, seed=0, on_step=None):
    """Train ``cfg.model`` for a few iterations on its train dataset, checking every step.

    Returns:
        tuple: ``losses (list[float])`` and ``touched (dict[str, bool])``: whether each
        parameter received a non-zero gradient in some iteration. Raises AssertionError on a
        non-finite loss or gradient, or a trainable parameter without a gradient.
        ``on_step(model, log_vars)`` runs after each backward pass, before the optimizer step.
    """
    model, dataset, optim = build_train_parts(cfg, subset, seed)
    with runner_epoch():
        return _train_steps(model, dataset, optim, iterations, batch_size, on_step)


@contextmanager
def runner_epoch(epoch: int = 0):
    """Stand in for the runner, which records the epoch in mmengine's MessageHub: heads that
    schedule on it (TOOD's ``initial_epoch``) read it there. Yields ``set(epoch)``; the hub's
    previous state is restored after."""
    hub = MessageHub.get_current_instance()
    had_epoch, old_epoch = 'epoch' in hub.runtime_info, hub.runtime_info.get('epoch')
    hub.update_info('epoch', epoch)
    try:
        yield lambda value: hub.update_info('epoch', value)
    finally:
        if had_epoch:
            hub.update_info('epoch', old_epoch)
        else:
            hub.pop_info('epoch', None)


def _train_steps(model, dataset, optim, iterations, batch_size, on_step):
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    touched = dict.fromkeys(params, False)
    losses = []
    for it in range(iterations):
        batch = pseudo_collate([dataset[(batch_size * it + k) % len(dataset)]
                                for k in range(batch_size)])
        data = model.data_preprocessor(batch, True)
        loss, log_vars = model.parse_losses(model(**data, mode='loss'))
        assert torch.isfinite(loss), f'iteration {it}: loss {loss}'
        optim.zero_grad()
        loss.backward()
        for name, p in params.items():
            assert p.grad is not None, f'iteration {it}: {name} got no gradient'
            assert torch.isfinite(p.grad).all(), f'iteration {it}: {name} non-finite gradient'
            touched[name] |= bool(p.grad.abs().sum() > 0)
        if on_step is not None:
            on_step(model, log_vars)
        optim.step()
        losses.append(float(loss))
    return losses, touched


def train_checking_edges(cfg, iterations=2, batch_size=2, subset=4):
    """:func:`train_iterations` with the teacher checked at every step
    (:func:`teacher_checker`): every loss finite, every trainable parameter touched, and each
    edge's loss finite and non-negative.

    Returns:
        tuple: ``seen`` (the last step's log variables) and ``touched``.
    """
    seen = {}
    losses, touched = train_iterations(cfg, iterations=iterations, batch_size=batch_size,
                                       subset=subset, on_step=teacher_checker(seen))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(touched.values()), [n for n, t in touched.items() if not t]
    for edge in cfg.model.edges:
        assert 0 <= seen[f'loss_{edge["name"]}'] < float('inf'), edge['name']
    return seen, touched


def save_detector_checkpoint(config, path, seed=0, nan_in=None, options=None):
    """Build ``config``'s detector with ``seed`` and save its weights as a checkpoint file.

    Args:
        nan_in (str, optional): Fill the parameters whose name starts with it with NaN.
        options (dict, optional): Config overrides (e.g. no pretrained backbone).
    """
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    init_default_scope('mmdet')
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(options or {})
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    state = model.state_dict()
    if nan_in is not None:
        state = {k: torch.full_like(v, float('nan')) if k.startswith(nan_in) else v
                 for k, v in state.items()}
    torch.save({'state_dict': state, 'meta': {}}, path)
    return str(path)


def export_round_trip(run_cfg, ckpt, tmp_path):
    """Export a distillation run's student, load it with mmdet's ``init_detector`` and evaluate
    both (graph checkpoint and export) with ``tools/test.py``'s evaluation.

    Returns:
        tuple: ``model`` (the loaded export) and ``results``: ``{'graph' | 'export':
        (metrics, predictions JSON bytes)}``. Asserts the export holds only the student.
    """
    from mmdet.apis import init_detector

    from distill.cli import test as test_cli
    from distill.export import export_student

    out_ckpt, out_cfg = export_student(run_cfg, ckpt, str(tmp_path / 'student'))
    state = torch.load(out_ckpt)['state_dict']
    assert state and not any(k.startswith(('architecture.', 'teacher', 'edge')) for k in state)
    model = init_detector(out_cfg, out_ckpt, device='cpu')
    results = {}
    for name, (cfg, weights) in {'graph': (run_cfg, ckpt), 'export': (out_cfg, out_ckpt)}.items():
        metrics = test_cli.evaluate(cfg, weights, str(tmp_path / f'{name}_work'),
                                    {'test_evaluator.outfile_prefix': str(tmp_path / name)})
        results[name] = (metrics, (tmp_path / f'{name}.bbox.json').read_bytes())
    return model, results


def record_outputs(obj, name: str) -> list:
    """Wrap the method ``obj.<name>`` (on this instance) so that every call's output is kept.

    Returns:
        list: The outputs, one per call, in order.
    """
    calls = []
    original = getattr(obj, name)

    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(out)
        return out

    setattr(obj, name, wrapper)
    return calls


def teacher_checker(seen: dict):
    """An ``on_step`` for :func:`train_iterations`: asserts that the teacher (if any) stays in
    eval mode and gets no gradient, and collects each step's log variables into ``seen``."""
    def check(model, log_vars):
        if model.teacher is not None:
            assert not model.teacher.training
            assert all(p.grad is None for p in model.teacher.parameters())
        seen.update(log_vars)
    return check
