"""Point-set sampling (SALT-Net's feature alignment): the compiled op vs the pure-PyTorch
reference vs mmcv's ``DeformConv2d`` doing the same sampling; and a tiny SALT-Net training step
with the op vs with the reference.

Usage::

    python benchmarks/point_sample.py [--rounds 9] [--device cpu|cuda] [--no-step]

Shapes (N = 9 points, the alignment's C_out = C):

* ``salt``: SALT-Net R50 head at 512 px, batch 2: C = 256, P3-P7 = 64^2, 32^2, 16^2, 8^2, 4^2;
* ``tiny``: the tiny configs (``configs/tiny/salt_s_digits.py``), batch 8 as they train:
  C = 48, P3-P5 of a 256 px image = 32^2, 16^2, 8^2.

What is timed, per level: forward + backward (features, points, weights) of
``sum_i W_i F(p + dp_i)``, i.e. ``distill.ops.point_sample_sum`` (SALT's alignment):

* ``op``: the compiled op (``torch.ops.distill.point_sample_cols`` + one GEMM, training path);
* ``reference``: ``grid_sample`` + ``einsum`` (``use_compiled(False)``);
* ``mmcv_dcn``: mmcv 2.1 ``DeformConv2d`` with a 3x3 kernel (9 points) whose offsets put its
  samples at the same points (checked equal before timing, as is the fused inference path);

and forward + backward (features, points) of the sampling alone, ``point_sample`` (``(B, C, N,
H, W)``): ``sample_op`` (the compiled op) vs ``sample_reference`` (``grid_sample``).

Each round runs the three variants one after the other on the same inputs (so the machine's
drift hits them alike); the table gives the medians of the times over rounds and the medians of
the per-round ratios (the whole head: the per-round sums over levels).
``step``: a full training step (forward, losses, backward, optimizer) of the tiny SALT-Net on 8
digits-scenes images, the op and the reference alternated round by round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import distill  # noqa: E402,F401
from benchmarks.busy import busy_core  # noqa: E402
from distill.ops.point_sample import (  # noqa: E402
    compiled_available,
    deform_conv_offsets,
    point_sample,
    point_sample_reference,
    point_sample_sum,
    use_compiled,
)

VARIANTS = ('op', 'reference', 'mmcv_dcn', 'sample_op', 'sample_reference')
SHAPES = {'salt': (2, 256, [64, 32, 16, 8, 4]), 'tiny': (8, 48, [32, 16, 8])}
N = 9


def timed(fn, device) -> float:
    if device == 'cuda':
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device == 'cuda':
        torch.cuda.synchronize()
    return time.perf_counter() - t


def level_variants(b, c, size, device):
    """The three fwd+bwd closures for one level, after checking they compute the same thing."""
    from mmcv.ops import DeformConv2d

    g = torch.Generator().manual_seed(size)
    feats = torch.randn(b, c, size, size, generator=g).to(device).requires_grad_()
    points = (torch.randn(b, 2 * N, size, size, generator=g) * 2).to(device).requires_grad_()
    weight = (torch.randn(c, c, N, generator=g) * 0.01).to(device).requires_grad_()
    dcn = DeformConv2d(c, c, 3, padding=1, bias=False).to(device)
    offset = deform_conv_offsets(points.detach()).requires_grad_()
    dcn.weight.data.copy_(weight.detach().reshape(c, c, 3, 3))

    def op():
        point_sample_sum(feats, points, weight).sum().backward()

    def reference():
        with use_compiled(False):
            point_sample_sum(feats, points, weight).sum().backward()

    def mmcv_dcn():
        dcn(feats, offset).sum().backward()

    def sample_op():
        point_sample(feats, points).sum().backward()

    def sample_reference():
        point_sample_reference(feats, points).sum().backward()

    with torch.no_grad():
        out = point_sample_sum(feats, points, weight)
        torch.testing.assert_close(dcn(feats, offset), out, rtol=1e-3, atol=1e-4)
        with use_compiled(False):
            torch.testing.assert_close(point_sample_sum(feats, points, weight), out, rtol=1e-3,
                                       atol=1e-4)
    return {'op': op, 'reference': reference, 'mmcv_dcn': mmcv_dcn, 'sample_op': sample_op,
            'sample_reference': sample_reference}


def bench_shapes(name, rounds, device):
    b, c, sizes = SHAPES[name]
    levels = {s: level_variants(b, c, s, device) for s in sizes}
    times = {s: {v: [] for v in VARIANTS} for s in sizes}
    for fns in levels.values():  # warm-up
        for fn in fns.values():
            fn()
    for r in range(rounds):
        for s, fns in levels.items():
            for v, fn in fns.items():
                times[s][v].append(timed(fn, device))
        print(f'[{name}] round {r + 1}/{rounds}', file=sys.stderr, flush=True)
    print(f'\n{name}: B = {b}, C = {c}, N = {N}, forward + backward; times: medians of {rounds} '
          'interleaved rounds (ms); ratios: medians of the per-round ratios')
    print('| level | op | reference | mmcv DeformConv2d | reference / op | mmcv / op | '
          'sampling only: op | reference | reference / op |')
    print('|---|---|---|---|---|---|---|---|---|')
    rows = [(f'P{i + 3} {s}x{s}', times[s]) for i, s in enumerate(sizes)]
    rows.append(('all levels', {v: [sum(times[s][v][r] for s in sizes) for r in range(rounds)]
                                for v in VARIANTS}))
    for label, t in rows:
        ms = {v: f'{statistics.median(x) * 1e3:.2f}' for v, x in t.items()}
        ratio = {(a, o): f'{statistics.median(x / y for x, y in zip(t[a], t[o])):.2f}'
                 for a, o in (('reference', 'op'), ('mmcv_dcn', 'op'),
                              ('sample_reference', 'sample_op'))}
        print(f'| {label} | {ms["op"]} | {ms["reference"]} | {ms["mmcv_dcn"]} | '
              f'{ratio["reference", "op"]} | {ratio["mmcv_dcn", "op"]} | {ms["sample_op"]} | '
              f'{ms["sample_reference"]} | {ratio["sample_reference", "sample_op"]} |')


def bench_step(rounds, device):
    """The tiny SALT-Net training step, op vs reference."""
    from mmengine.dataset import pseudo_collate
    from mmengine.logging import MMLogger

    from distill.build import build_train_parts
    from distill.cli.common import load_config

    # a WARNING-level logger as mmengine's current instance: no init_weights report on stdout
    MMLogger.get_instance('point_sample_benchmark', log_level='WARNING')
    cfg = load_config(str(REPO / 'configs/tiny/salt_s_digits.py'))
    model, dataset, optim = build_train_parts(cfg, 8)
    model.to(device)
    data = model.data_preprocessor(pseudo_collate([dataset[i] for i in range(8)]), True)

    def step():
        loss, _ = model.parse_losses(model(**data, mode='loss'))
        optim.update_params(loss)

    times = {'op': [], 'reference': []}
    for enabled in (True, False):  # warm-up
        with use_compiled(enabled):
            step()
    for r in range(rounds):
        for v, enabled in (('op', True), ('reference', False)):
            with use_compiled(enabled):
                times[v].append(timed(step, device))
        print(f'[step] round {r + 1}/{rounds}', file=sys.stderr, flush=True)
    ratios = [ref / op for op, ref in zip(times['op'], times['reference'])]
    med = {v: statistics.median(t) for v, t in times.items()}
    print(f'\ntiny SALT-Net training step (configs/tiny/salt_s_digits.py, batch 8), medians of '
          f'{rounds} interleaved rounds')
    print(f'op {med["op"]:.3f} s, reference {med["reference"]:.3f} s, reference / op: median '
          f'of per-round ratios {statistics.median(ratios):.2f} (range {min(ratios):.2f}-'
          f'{max(ratios):.2f})')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rounds', type=int, default=9)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--shapes', nargs='+', default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument('--no-step', action='store_true', help='skip the SALT-Net step')
    parser.add_argument('--busy', action='store_true',
                        help='keep one core loaded by another process while timing')
    args = parser.parse_args(argv)
    if not compiled_available(args.device):
        sys.exit(f'distill._C has no {args.device} kernels: build it first '
                 '(pip install --no-build-isolation -e .)')
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}'
          + (', one core kept busy (--busy)' if args.busy else ''))
    with busy_core(args.busy):
        for name in args.shapes:
            bench_shapes(name, args.rounds, args.device)
        if not args.no_step:
            bench_step(args.rounds, args.device)


if __name__ == '__main__':
    main()
