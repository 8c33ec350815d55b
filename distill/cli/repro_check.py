"""Which setting changes a run: the entry point (``train.py`` vs ``train_distill.py --recipe
none``) or the number of torch threads, measured on the first iterations of the real schedule.

Usage::

    python tools/repro_check.py configs/tiny/gfl_s_digits.py [--iters 30] [--seed 0]
        [--threads 1 2]

For each variant it builds the run as the tool does (same config, seed and data), records the
student's initial weights, the images of every batch and the loss of every iteration, stops
after ``--iters`` iterations and reports, against the first variant, whether the initial
weights and the batches are identical, the first iteration whose loss differs and the largest
difference of the weights at the end. A loss that differs in its last bits at iteration 1 grows
over thousands of iterations like a change of seed: such runs agree only in distribution.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from mmengine.hooks import Hook

from distill.cli.common import cli


class _Stop(Exception):
    pass


class _Probe(Hook):
    """Records the initial weights, the batches and the losses; stops after ``iters``."""

    priority = 'LOWEST'

    def __init__(self, iters: int):
        self.iters, self.init, self.batches, self.losses = iters, None, [], []

    def before_train(self, runner):
        self.init = {k: v.detach().clone() for k, v in _student(runner).state_dict().items()}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.batches.append([s.img_path for s in data_batch['data_samples']])

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append(float(outputs['loss']))
        if len(self.losses) >= self.iters:
            self.final = {k: v.detach().clone() for k, v in _student(runner).state_dict().items()}
            raise _Stop


def _student(runner):
    model = runner.model
    return getattr(model, 'architecture', model)


def run_variant(config: str, entry: str, threads: int, iters: int, seed: int) -> _Probe:
    """Train ``iters`` iterations of ``config`` through ``entry`` on ``threads`` threads."""
    from distill.cli import train, train_distill
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory() as work:
            if entry == 'train':
                args = train.parse_args([config, '--work-dir', work, '--seed', str(seed)])
                runner = train.build_runner(args)
            else:
                args = train_distill.parse_args(['--student', config, '--recipe', 'none',
                                                 '--work-dir', work, '--seed', str(seed)])
                runner = train_distill.build_runner(args)
            probe = _Probe(iters)
            runner.register_hook(probe)
            try:
                runner.train()
            except _Stop:
                pass
    finally:
        torch.set_num_threads(previous)
    return probe


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].numel())


def compare_probes(ref: _Probe, other: _Probe) -> dict:
    """Identical initial weights and batches, the first differing loss (1-based iteration;
    None: all equal) and the largest final weight difference."""
    first = next((i + 1 for i, (x, y) in enumerate(zip(ref.losses, other.losses)) if x != y),
                 None)
    return dict(same_init=_max_diff(ref.init, other.init) == 0.0,
                same_batches=ref.batches == other.batches, first_loss_diff=first,
                loss_at_end=(ref.losses[-1], other.losses[-1]),
                max_weight_diff=_max_diff(ref.final, other.final))


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='student config')
    parser.add_argument('--iters', type=int, default=30, help='iterations per variant')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, nargs='+', default=[2, 1],
                        help='thread counts to try (the first is the reference)')
    args = parser.parse_args(argv)
    variants = [('train', args.threads[0])] + [('train_distill', t) for t in args.threads]
    probes = [run_variant(args.config, e, t, args.iters, args.seed) for e, t in variants]
    rows = []
    print(f'{args.config}, seed {args.seed}, {args.iters} iterations; reference: '
          f'tools/train.py on {args.threads[0]} thread(s)')
    print('| variant | same initial weights | same batches | first iteration whose loss '
          'differs | loss at the end (ref, this) | max weight difference at the end |')
    print('|---|---|---|---|---|---|')
    for (entry, threads), probe in zip(variants, probes):
        row = dict(entry=entry, threads=threads, **compare_probes(probes[0], probe))
        rows.append(row)
        print(f'| {entry}.py, {threads} thread(s) | {row["same_init"]} | {row["same_batches"]} '
              f'| {row["first_loss_diff"] or "none"} | {row["loss_at_end"][0]:.6f}, '
              f'{row["loss_at_end"][1]:.6f} | {row["max_weight_diff"]:.2e} |')
    return rows


cli_main = cli(main)

if __name__ == '__main__':
    cli_main()
