"""Draw a student's distillation regions (main = its positives, VLR) on a sample image.

Usage::

    python tools/draw_regions.py configs/tiny/gfl_s_digits.py [--checkpoint CKPT]
        [--split val] [--index 0] [--gamma 0.25] [--out work_dirs/regions.png]

One panel per FPN level: the image, its GT boxes (white), and a square of the level's stride
on every prior of the valuable localization region (orange: LD paper Algorithm 1, which keeps
the positives) and of the main region over it (green: the student's ATSS positives; a positive
inside the VLR shows both colours mixed). The regions come from
the same graph code as training (the student's own label assignment, its priors), for any
dense head; a location is coloured where any of its priors (RetinaNet: 9 anchors) is in.
"""

from __future__ import annotations

import argparse
import os
import os.path as osp

import numpy as np
import torch
from mmengine.dataset import pseudo_collate

import distill  # noqa: F401  (compat fixes + registries)
from distill.cli.common import ConfigCheckError, build_plain_dataset, cli, load_config
from distill.files import check_output_path

COLORS = {'main': (0.1, 0.8, 0.2), 'vlr': (1.0, 0.55, 0.0)}


def region_masks(cfg, checkpoint: str | None, split: str, index: int, gamma: float):
    """The image (RGB uint8), GT boxes, per-level priors/strides and the two region masks."""
    from distill.checkpoint import load_weights_strict
    from distill.graph import DistillGraph
    from distill.graph.outputs import priors_per_location

    if not cfg.model.get('bbox_head'):
        raise ConfigCheckError(
            f'{cfg.filename}: draw_regions draws regions over a dense head\'s priors, but '
            f'{cfg.model.get("type")} has no model.bbox_head (feature methods on it weight the '
            f'neck\'s cells: AllRegion, GTBoxRegion, FGDRegion)')
    item = build_plain_dataset(cfg, split)[index]  # no random flip: a clear picture
    # Self-distillation wiring (the teacher side reads the student): regions need no teacher.
    # Class logits: every dense head declares them (the loss value is not used).
    edges = [dict(name=name, loss=dict(type='KDLoss'), student=dict(output='cls_logits'),
                  teacher=dict(output='cls_logits', of='student'), region=region)
             for name, region in (('main', dict(type='MainRegion', weight='ones')),
                                  ('vlr', dict(type='VLRRegion', gamma=gamma)))]
    graph = DistillGraph(architecture=cfg.model, edges=edges)
    if checkpoint:
        load_weights_strict(graph.architecture, checkpoint, role='student',
                            config=f'the student config {cfg.filename}')
    graph.eval()
    data = graph.data_preprocessor(pseudo_collate([item]), False)
    with torch.no_grad():
        graph(**data, mode='loss')
    head = graph.architecture.bbox_head
    strides = [s[0] for s in head.prior_generator.strides]
    sizes = [tuple(m.shape[-2:]) for m in
             graph.student_recorders.get_recorder('head').get_record_data(data_idx=0)]
    image = item['inputs'].permute(1, 2, 0).numpy()[..., ::-1]  # BGR -> RGB
    gts = item['data_samples'].gt_instances.bboxes
    gts = gts.tensor if hasattr(gts, 'tensor') else gts
    # A location is drawn where any of its A priors (RetinaNet: 9 anchors) is in the region;
    # rows are location-major, anchor-minor (mmdet's order).
    a = priors_per_location(head)
    return (np.ascontiguousarray(image), gts.numpy(), sizes, strides,
            {k: (v[0] > 0).reshape(-1, a).any(-1).numpy() for k, v in graph.last_regions.items()})


def draw(image, gts, sizes, strides, masks, out: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 4.6), dpi=110)
    start = 0
    for ax, (h, w), stride in zip(np.atleast_1d(axes), sizes, strides):
        ax.imshow(image)
        for name in ('vlr', 'main'):  # the positives on top: most lie inside the VLR
            level = masks[name][start:start + h * w].reshape(h, w)
            for y, x in zip(*np.nonzero(level)):
                ax.add_patch(Rectangle((x * stride, y * stride), stride, stride, lw=0,
                                       color=COLORS[name], alpha=0.55))
        for x1, y1, x2, y2 in gts:
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec='white', lw=1.2))
        ax.set_title(f'stride {stride}: main {int(masks["main"][start:start + h * w].sum())}, '
                     f'VLR {int(masks["vlr"][start:start + h * w].sum())}', fontsize=9)
        ax.set_xlim(0, image.shape[1])
        ax.set_ylim(image.shape[0], 0)
        ax.axis('off')
        start += h * w
    fig.legend(handles=[Patch(color=COLORS['main'], label='main (student positives)'),
                        Patch(color=COLORS['vlr'], label='VLR (positives included)'),
                        Patch(fc='none', ec='black', label='GT box')],
               loc='lower center', ncol=3, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='student config')
    parser.add_argument('--checkpoint', help='student weights (the assignment is weight-free '
                                             'for ATSS; needed for prediction-based assigners)')
    parser.add_argument('--split', choices=['train', 'val'], default='val')
    parser.add_argument('--index', type=int, default=0)
    parser.add_argument('--gamma', type=float, default=0.25)
    parser.add_argument('--out', default='work_dirs/regions.png')
    args = parser.parse_args(argv)
    check_output_path(args.out, '--out', directory=False)
    cfg = load_config(args.config)
    image, gts, sizes, strides, masks = region_masks(cfg, args.checkpoint, args.split,
                                                     args.index, args.gamma)
    name = osp.splitext(osp.basename(args.config))[0]
    draw(image, gts, sizes, strides, masks, args.out,
         f'{name}: distillation regions of {args.split} image {args.index} '
         f'(gamma = {args.gamma})')
    print(f'wrote {args.out}: main {int(masks["main"].sum())} locations, '
          f'VLR {int(masks["vlr"].sum())} locations, {len(gts)} GT boxes')
    return masks


cli_main = cli(main)

if __name__ == '__main__':
    cli_main()
