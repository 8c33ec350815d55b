"""One training step of the SALT-Net, DDOD and MOD students on a GPU against the same step on the
CPU, from the same weights and batch: every loss within 1e-3 relative, every parameter's
gradient within 1e-2 relative L2 error (``|g_cuda - g_cpu| / |g_cpu|``; TF32 off, so the
difference is float32 summation order and the kernels' own rounding); with mmcv's
deformable-conv kernels (the CUDA default) and with ours; and an AMP (float16 autocast) step
with finite losses and gradients. Skips without a GPU: ``benchmarks/gpu_check.sh`` runs it on a
lent machine."""

import pytest
import torch
from mmengine.dataset import pseudo_collate

from distill.build import build_train_parts
from distill.cli.common import load_config
from distill.ops import deform_conv

STUDENTS = ['configs/tiny/salt_s_digits.py', 'configs/tiny/ddod_s_digits.py',
            'configs/tiny/mod_s_digits.py']
LOSS_RTOL, GRAD_RTOL = 1e-3, 1e-2
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')


def training_step(config: str, device: str, amp: bool = False) -> tuple[dict, dict]:
    """The losses (``log_vars``) and the gradients (on the CPU) of one step of ``config``'s
    student, built with seed 0, on the first two training images."""
    model, dataset, _ = build_train_parts(load_config(config), 2, seed=0)
    model.to(device)
    data = model.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), True)
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.float16,
                        enabled=amp):
        loss, log_vars = model.parse_losses(model(**data, mode='loss'))
    loss.backward()
    grads = {n: p.grad.detach().float().cpu() for n, p in model.named_parameters()
             if p.grad is not None}
    return log_vars, grads


def relative_errors(a: tuple[dict, dict], b: tuple[dict, dict]) -> tuple[dict, dict]:
    """Per loss and per parameter, the relative error of ``a`` against the reference ``b``."""
    (la, ga), (lb, gb) = a, b
    assert la.keys() == lb.keys() and ga.keys() == gb.keys()
    loss_err = {k: abs(float(la[k]) - float(lb[k])) / max(abs(float(lb[k])), 1e-12) for k in lb}
    grad_err = {k: float((ga[k] - gb[k]).norm() / gb[k].norm().clamp(min=1e-12)) for k in gb}
    return loss_err, grad_err


@pytest.fixture(scope='module')
def cpu_steps(repo):
    return {s: training_step(str(repo / s), 'cpu') for s in STUDENTS}


@needs_gpu
@pytest.mark.parametrize('kernel', deform_conv.CUDA_KERNELS)
@pytest.mark.parametrize('student', STUDENTS, ids=lambda s: s.split('/')[-1])
def test_cuda_step_equals_cpu(student, kernel, cpu_steps, repo):
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    previous = deform_conv.set_cuda_kernel(kernel)
    try:
        cuda = training_step(str(repo / student), 'cuda')
    finally:
        deform_conv.set_cuda_kernel(previous)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    loss_err, grad_err = relative_errors(cuda, cpu_steps[student])
    worst = max(grad_err, key=grad_err.get)
    print(f'{student} ({kernel}): worst loss error {max(loss_err.values()):.2e}, worst '
          f'gradient error {grad_err[worst]:.2e} ({worst})')
    assert max(loss_err.values()) <= LOSS_RTOL, loss_err
    assert grad_err[worst] <= GRAD_RTOL, (worst, grad_err[worst])


@needs_gpu
@pytest.mark.parametrize('student', STUDENTS, ids=lambda s: s.split('/')[-1])
def test_cuda_amp_step_is_finite(student, repo):
    log_vars, grads = training_step(str(repo / student), 'cuda', amp=True)
    assert all(torch.isfinite(torch.as_tensor(float(v))) for v in log_vars.values()), log_vars
    assert all(torch.isfinite(g).all() for g in grads.values())
