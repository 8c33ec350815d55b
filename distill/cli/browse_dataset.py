"""Draw ground-truth boxes of a config's dataset to PNG files, to look at the data.

Usage::

    python tools/browse_dataset.py configs/tiny/gfl_s_digits.py [--split train|val]
        [--num 12] [--out-dir work_dirs/browse] [--scale 2]

Writes one PNG per image (boxes drawn on the *un-resampled* image, each edge on the outermost
pixel row/column the box covers) and a contact sheet ``<out-dir>/grid.png``. Ignore regions
(``iscrowd``) are drawn in grey.
"""

from __future__ import annotations

import argparse
import math
import os
import os.path as osp

from PIL import Image, ImageDraw

import distill  # noqa: F401  (registries)
from distill.cli.common import add_cfg_options, base_dataset_cfg, cli, load_config
from distill.files import check_output_path

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]
IGNORE_COLOR = (160, 160, 160)


def draw_sample(img_path: str, instances: list[dict], classes: tuple,
                scale: int = 2) -> Image.Image:
    """Draw boxes (``instances`` as in mmdet data infos: ``bbox`` x1y1x2y2, ``bbox_label``).

    The image is enlarged ``scale`` times with nearest-neighbour sampling, so that a box edge
    drawn one display pixel wide sits exactly on the image pixels the box bounds.
    """
    img = Image.open(img_path).convert('RGB')
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    for inst in instances:
        x1, y1, x2, y2 = (v * scale for v in inst['bbox'])
        box = [x1, y1, x2 - 1, y2 - 1]  # pixel-edge box -> outermost covered pixels
        if inst.get('ignore_flag', 0):  # an iscrowd ignore region
            draw.rectangle(box, outline=IGNORE_COLOR, width=1)
            continue
        color = PALETTE[inst['bbox_label'] % len(PALETTE)]
        draw.rectangle(box, outline=color, width=1)
        draw.text((box[0] + 1, max(0, box[1] - 11)), str(classes[inst['bbox_label']]), fill=color)
    return img


def contact_sheet(images: list[Image.Image], columns: int = 4) -> Image.Image:
    """Tile images into one picture (row-major, top-left aligned)."""
    cell_w = max(i.width for i in images)
    cell_h = max(i.height for i in images)
    rows = math.ceil(len(images) / columns)
    sheet = Image.new('RGB', (cell_w * min(columns, len(images)), cell_h * rows), (32, 32, 32))
    for k, im in enumerate(images):
        sheet.paste(im, ((k % columns) * cell_w, (k // columns) * cell_h))
    return sheet


def main(argv=None):
    parser = argparse.ArgumentParser(description='Draw ground-truth boxes to PNG.')
    parser.add_argument('config', help='config file (its train/val dataset is drawn)')
    parser.add_argument('--split', choices=['train', 'val'], default='train')
    parser.add_argument('--num', type=int, default=12, help='number of images')
    parser.add_argument('--out-dir', default=None,
                        help='output folder (default work_dirs/browse/<config name>-<split>)')
    parser.add_argument('--scale', type=int, default=2, help='nearest-neighbour enlargement')
    add_cfg_options(parser)
    args = parser.parse_args(argv)

    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    out_dir = args.out_dir or osp.join(
        'work_dirs', 'browse', f'{osp.splitext(osp.basename(args.config))[0]}-{args.split}')
    check_output_path(out_dir, '--out-dir')
    cfg = load_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    ds_cfg = base_dataset_cfg(cfg[f'{args.split}_dataloader'].dataset).copy()
    ds_cfg.pipeline = []
    ds_cfg.pop('filter_cfg', None)
    dataset = DATASETS.build(ds_cfg)
    os.makedirs(out_dir, exist_ok=True)
    classes = dataset.metainfo['classes']
    drawn = []
    for i in range(min(args.num, len(dataset))):
        info = dataset.get_data_info(i)
        im = draw_sample(info['img_path'], info['instances'], classes, args.scale)
        im.save(osp.join(out_dir, f"{osp.splitext(osp.basename(info['img_path']))[0]}.png"))
        drawn.append(im)
    contact_sheet(drawn).save(osp.join(out_dir, 'grid.png'))
    print(f'wrote {len(drawn)} images and grid.png to {out_dir}')


cli_main = cli(main)

if __name__ == '__main__':
    cli_main()
