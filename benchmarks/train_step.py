"""Training-step and inference time of the tiny configs, measured side by side.

Usage::

    python benchmarks/train_step.py [--rounds 9] [--batch 8] [configs/tiny/gfl_s_digits.py ...]

Each round times one training step (forward, loss, backward, optimizer) and one no-grad
forward of every config in turn, on the same batch of the config's own training data, so that
the machine's drift hits all configs alike. Prints per config the median over rounds, and each
median relative to the first config. Threads: torch's default (set OMP_NUM_THREADS to pin).
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
from distill.build import build_train_parts  # noqa: E402
from distill.cli.common import load_config  # noqa: E402

DEFAULT = ['configs/tiny/gfl_s_digits.py', 'configs/tiny/gfl_l_digits.py',
           'configs/tiny/atss_s_digits.py', 'configs/tiny/atss_l_digits.py']


def build(config: str, batch: int):
    from mmengine.dataset import pseudo_collate

    model, dataset, optim = build_train_parts(load_config(str(REPO / config)), batch)
    data = model.data_preprocessor(pseudo_collate([dataset[i] for i in range(batch)]), True)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return model, data, optim, params


def time_step(model, data, optim) -> float:
    model.train()
    t = time.perf_counter()
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    optim.update_params(loss)
    return time.perf_counter() - t


@torch.no_grad()
def time_forward(model, data) -> float:
    model.eval()
    t = time.perf_counter()
    model(**data, mode='tensor')
    return time.perf_counter() - t


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('configs', nargs='*', default=DEFAULT)
    parser.add_argument('--rounds', type=int, default=9)
    parser.add_argument('--batch', type=int, default=8)
    args = parser.parse_args(argv)

    runs = {c: build(c, args.batch) for c in args.configs}
    for model, data, optim, _ in runs.values():  # warm-up (allocator, first-call overheads)
        time_step(model, data, optim)
        time_forward(model, data)
    steps = {c: [] for c in runs}
    fwds = {c: [] for c in runs}
    for r in range(args.rounds):
        for c, (model, data, optim, _) in runs.items():
            steps[c].append(time_step(model, data, optim))
            fwds[c].append(time_forward(model, data))
        print(f'round {r + 1}/{args.rounds} done', file=sys.stderr, flush=True)
    ref = args.configs[0]
    ref_step = statistics.median(steps[ref])
    print(f'batch {args.batch}, {args.rounds} interleaved rounds, {torch.get_num_threads()} '
          'threads; medians')
    print('| config | params (M) | train step (s) | no-grad forward (s) | step / first |')
    print('|---|---|---|---|---|')
    for c, (_, _, _, params) in runs.items():
        step, fwd = statistics.median(steps[c]), statistics.median(fwds[c])
        print(f'| {Path(c).stem} | {params:.2f} | {step:.3f} | {fwd:.3f} | '
              f'{step / ref_step:.2f} |')


if __name__ == '__main__':
    main()
