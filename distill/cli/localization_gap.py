"""Does the teacher localize better than the student where Main LD would teach it?

Usage::

    python tools/localization_gap.py --student configs/tiny/gfl_s_digits.py \\
        --student-ckpt STUDENT.pth --teacher configs/tiny/gfl_l_digits.py \\
        --teacher-ckpt TEACHER.pth [--split val] [--num-images 64] [--batch 8]

Both detectors (GFL-style heads: a general distribution of ``reg_max + 1`` bins per box side)
run in eval mode on the same images. At the student's assigned positives (the Main LD region)
each one's box is decoded with mmdet's own head functions (``integral`` x stride, then
``bbox_coder.decode`` from the prior's centre) and compared with the GT box the assignment gave
that prior. It prints the mean and median IoU of both, and the mean LD (KL between the softened
distributions, ``T``) between them. A teacher that is no better there has little localization
knowledge for LD to transfer, whatever the loss weight.
"""

from __future__ import annotations

import argparse

import torch
from mmengine.dataset import pseudo_collate
from torch import Tensor

import distill  # noqa: F401  (compat fixes + registries)
from distill.cli.common import build_plain_dataset, cli


def decode_boxes(head, reg: Tensor, anchors: Tensor, strides: Tensor) -> Tensor:
    """Boxes of GFL distributions, decoded as the head does at test time.

    Args:
        head: The GFL-style head (``integral``, ``anchor_center``, ``bbox_coder``).
        reg (Tensor[M, 4 * (reg_max + 1)]): Box-distribution logits.
        anchors (Tensor[M, 4]): The priors of those rows.
        strides (Tensor[M]): Their level's stride.

    Returns:
        Tensor[M, 4]: ``(x1, y1, x2, y2)``.
    """
    distances = head.integral(reg) * strides[:, None]
    return head.bbox_coder.decode(head.anchor_center(anchors), distances)


@torch.no_grad()
def positive_box_quality(graph, data: dict, T: float = 10.0) -> dict[str, Tensor]:
    """IoU with the assigned GT of the student's and the teacher's boxes at the student's positives.

    Args:
        graph (DistillGraph): With a teacher, the default taps (head outputs, assignment).
        data (dict): A preprocessed batch (``inputs``, ``data_samples``).
        T (float): LD temperature for the reported KL.

    Returns:
        dict: ``student_iou``, ``teacher_iou`` (Tensor[P]) and ``ld`` (Tensor[P], the KL of
        each positive box, summed over its 4 sides, times T^2).
    """
    from mmdet.structures.bbox import bbox_overlaps

    from distill.graph.algorithm import read_tap
    from distill.losses.ld import ld_per_box
    from distill.regions.base import flatten_levels

    graph(**data, mode='loss')
    head = graph.architecture.bbox_head
    anchors, labels, _, bbox_targets, _, _ = read_tap(graph.student_recorders, dict(tap='assign'))
    strides = torch.cat([anchors[0].new_full((a.shape[1],), float(s[0]))
                         for a, s in zip(anchors, head.prior_generator.strides)])
    labels, targets = torch.cat(labels, 1), torch.cat(bbox_targets, 1)
    pos = (labels >= 0) & (labels < head.num_classes)
    anchors = torch.cat(anchors, 1)[pos]
    out = {}
    regs = {}
    for role, manager in (('student', graph.student_recorders),
                          ('teacher', graph.teacher_recorders)):
        regs[role] = flatten_levels(read_tap(manager, dict(tap='head', index=1)))[pos]
        boxes = decode_boxes(head, regs[role], anchors, strides.expand_as(labels)[pos])
        out[f'{role}_iou'] = bbox_overlaps(boxes, targets[pos], is_aligned=True)
    out['ld'] = ld_per_box(regs['student'], regs['teacher'], T)
    return out


def measure(args) -> dict:
    """Run the pair over ``args.num_images`` images of ``args.split`` (at most all of them).

    Returns:
        dict: the per-positive results of :func:`positive_box_quality` and ``num_images``,
        the number of images actually used.
    """
    from distill.build import build_train_parts
    from distill.checkpoint import load_weights_strict
    from distill.cli.train_distill import build_distill_config

    cfg = build_distill_config(args.student, 'ld', args.teacher, args.teacher_ckpt)
    graph, _, _ = build_train_parts(cfg, 1)
    load_weights_strict(graph.architecture, args.student_ckpt, role='student',
                        config=f'the student config {args.student}')
    graph.eval()
    dataset = build_plain_dataset(cfg, args.split)  # no random flip in the numbers
    n = min(args.num_images, len(dataset))
    parts: dict[str, list] = {}
    for start in range(0, n, args.batch):
        batch = [dataset[i] for i in range(start, min(start + args.batch, n))]
        data = graph.data_preprocessor(pseudo_collate(batch), False)
        for k, v in positive_box_quality(graph, data, args.T).items():
            parts.setdefault(k, []).append(v)
        print(f'[localization_gap] {min(start + args.batch, n)}/{n} images', flush=True)
    out = {k: torch.cat(v) for k, v in parts.items()}
    out['num_images'] = n
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--student', required=True, help='student config')
    parser.add_argument('--student-ckpt', required=True,
                        help='student weights (a plain or a distill-run checkpoint)')
    parser.add_argument('--teacher', required=True, help='teacher config')
    parser.add_argument('--teacher-ckpt', required=True, help='teacher weights')
    parser.add_argument('--split', default='val', choices=['train', 'val'])
    parser.add_argument('--num-images', type=int, default=64)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--T', type=float, default=10.0, help='LD temperature (default: 10)')
    args = parser.parse_args(argv)
    res = measure(args)
    p = len(res['ld'])
    print(f'{args.split}, {res["num_images"]} images, {p} student positives (Main LD region)')
    print('| model | IoU with assigned GT: mean | median |')
    print('|---|---|---|')
    for role in ('student', 'teacher'):
        iou = res[f'{role}_iou']
        print(f'| {role} | {iou.mean():.3f} | {iou.median():.3f} |')
    gap = res['teacher_iou'].mean() - res['student_iou'].mean()
    print(f'gap (teacher - student mean IoU): {gap:+.3f}')
    print(f'teacher better on {float((res["teacher_iou"] > res["student_iou"]).float().mean()):.0%}'
          f' of the positives; mean LD (T={args.T:g}) student vs teacher {res["ld"].mean():.3f}')
    return res


cli_main = cli(main)

if __name__ == '__main__':
    cli_main()
