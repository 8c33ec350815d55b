"""MOD's APS label assignment: our batched assigner vs the published code's way (a Python loop
over the GTs with a scikit-learn ``GaussianMixture`` fitted on the CPU per GT).

Usage::

    python benchmarks/aps_assign.py [--rounds 9] [--device cpu|cuda] [--seed 0]

Shapes:

* ``coco``: batch 2 at 512 px, 5 levels (strides 8-128: 64^2 ... 4^2 = 5456 locations), 80
  classes, 10-30 GTs per image (drawn per round);
* ``tiny``: the tiny configs (``configs/tiny/mod_s_digits.py``): batch 8 at 256 px, 3 levels
  (32^2, 16^2, 8^2 = 1344 locations), 10 classes, 3-7 GTs per image.

What is timed: one batch's assignment from the head's outputs (class logits, decoded boxes)
and the GTs to each location's GT index: ``batched``
(:meth:`distill.models.assigners.APSAssigner.assign_batch`, with the compiled focal negative
sum and GMM of ``distill._C`` where built), ``torch ops`` (the same inside
``use_compiled(False)``: PyTorch ops only, what a device without our kernels runs) and
``per_gt`` (:func:`distill.models.assigners.aps_reference.aps_assign_per_gt`). Each round draws
a batch and runs the three on it, one after the other (the machine's drift hits them alike);
the table gives the medians over rounds of the times and of the per-round ratios. Each round
checks that all three give the same assignment, and counts the GTs whose positive sets agree.
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

from benchmarks.busy import busy_core  # noqa: E402
from distill.models.assigners import APSAssigner  # noqa: E402
from distill.models.assigners.aps_reference import aps_assign_per_gt  # noqa: E402
from distill.ops.extension import use_compiled  # noqa: E402
from distill.regions.base import pad_per_image  # noqa: E402

SHAPES = {
    # batch, image side, strides, classes, GTs per image (min, max)
    'coco': (2, 512, (8, 16, 32, 64, 128), 80, (10, 30)),
    'tiny': (8, 256, (8, 16, 32), 10, (3, 7)),
}


def make_batch(shape: str, gen: torch.Generator, device: str):
    """Predictions of a head part-way through training and random GTs (16-256 px)."""
    b, side, strides, classes, (lo, hi) = SHAPES[shape]
    pts, sizes = [], []
    for s in strides:
        n = side // s
        ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing='ij')
        pts.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).float() * s + s // 2)
        sizes.append(n * n)
    points = torch.cat(pts)
    stride = torch.cat([torch.full((n,), float(s)) for n, s in zip(sizes, strides)])
    total = len(points)
    logits = torch.randn(b, total, classes, generator=gen) - 4  # mostly background
    ltrb = (0.5 + torch.rand(b, total, 4, generator=gen) * 4) * stride[:, None]
    boxes = torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], -1)
    gts, labels = [], []
    for _ in range(b):
        k = int(torch.randint(lo, hi + 1, (1,), generator=gen))
        wh = 16 + torch.rand(k, 2, generator=gen) * (min(256, side) - 16)
        xy = torch.rand(k, 2, generator=gen) * (side - wh)
        gts.append(torch.cat([xy, xy + wh], -1))
        labels.append(torch.randint(0, classes, (k,), generator=gen))
    pg, valid = pad_per_image(gts, points)
    pl, _ = pad_per_image(labels, points)
    moved = [x.to(device) for x in (points, logits, boxes, pg, pl, valid)]
    return moved, sizes, [t.to(device) for t in gts], [t.to(device) for t in labels]


def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def run(shape: str, rounds: int, device: str, seed: int) -> dict:
    assigner = APSAssigner(topk=9, num_levels=2, reg_weight=2.0)
    gen = torch.Generator().manual_seed(seed)
    times = {'batched': [], 'torch': [], 'per_gt': []}
    ratios, ratios_torch, gts, agree, identical = [], [], 0, 0, True
    for r in range(rounds + 1):  # round 0 warms up (allocations, sklearn import)
        (points, logits, boxes, pg, pl, valid), sizes, gt_list, label_list = make_batch(
            shape, gen, device)
        _sync(device)
        t0 = time.perf_counter()
        ours, positives = assigner.assign_batch(points, sizes, logits, boxes, pg, pl, valid)
        _sync(device)
        t1 = time.perf_counter()
        with use_compiled(False):
            plain, _ = assigner.assign_batch(points, sizes, logits, boxes, pg, pl, valid)
        _sync(device)
        t2 = time.perf_counter()
        ref = aps_assign_per_gt(assigner, points, sizes, logits, boxes, gt_list, label_list)
        _sync(device)
        t3 = time.perf_counter()
        identical &= bool((ours.cpu() == ref).all()) and bool((plain.cpu() == ref).all())
        # per GT: its positives before the conflicts between GTs are resolved, vs the
        # reference's final positives of that GT where no other GT claims them
        for i, t in enumerate(gt_list):
            for j in range(len(t)):
                gts += 1
                mine = (ours.cpu()[i] == j)
                agree += bool((mine == (ref[i] == j)).all())
        if r == 0:
            continue
        times['batched'].append(t1 - t0)
        times['torch'].append(t2 - t1)
        times['per_gt'].append(t3 - t2)
        ratios.append((t3 - t2) / (t1 - t0))
        ratios_torch.append((t3 - t2) / (t2 - t1))
    return dict(shape=shape, batched=statistics.median(times['batched']) * 1e3,
                torch=statistics.median(times['torch']) * 1e3,
                ratio_torch=statistics.median(ratios_torch),
                per_gt=statistics.median(times['per_gt']) * 1e3,
                ratio=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios),
                identical=identical, gts=gts, agree=agree)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--rounds', type=int, default=9)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--busy', action='store_true',
                   help='keep one core loaded by another process while timing')
    args = p.parse_args(argv)
    print(f'device {args.device}, torch threads {torch.get_num_threads()}, '
          f'{args.rounds} rounds (+1 warm-up), medians'
          + (', one core kept busy (--busy)' if args.busy else ''))
    print('| shapes | batched (ms) | per-GT sklearn loop (ms) | per-GT / batched | range | '
          'torch ops only (ms) | per-GT / torch ops | same assignment | '
          'GTs with the same positives |')
    print('|---|---|---|---|---|---|---|---|---|')
    for shape in SHAPES:
        with busy_core(args.busy):
            r = run(shape, args.rounds, args.device, args.seed)
        print(f"| {shape} | {r['batched']:.1f} | {r['per_gt']:.1f} | **{r['ratio']:.1f}x** | "
              f"{r['ratio_min']:.1f}-{r['ratio_max']:.1f} | {r['torch']:.1f} | "
              f"{r['ratio_torch']:.1f}x | {r['identical']} | {r['agree']}/{r['gts']} |",
              flush=True)


if __name__ == '__main__':
    main()
