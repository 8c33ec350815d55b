"""Disk cost of the teacher-output cache at the papers' shapes: bytes per image, per tap.

    python benchmarks/cache_size.py [--student configs/coco/gfl_r50_fpn_1x_coco.py]
        [--teacher configs/coco/gfl_r101_fpn_1x_coco.py] [--recipe kd_ld_vlr pkd]
        [--shape 800 1333] [--images 10000]

For each recipe: builds its graph (the teacher with random weights: a record's size does not
depend on its values), runs the teacher on one image of ``--shape`` (padded to the student's
``pad_size_divisor``, as its data preprocessor does) with a :class:`TeacherCache` writing into
a temporary folder, once storing float32 and once float16, and prints the size of each tap's
file (what ``torch.save`` writes: the tensors plus a small header) and what a cache of
``--images`` such images costs on disk. Each flip or scale of an image is its own record
(docs/teacher_cache.md), so a run with ``RandomFlip`` can come to hold twice as many.
"""

from __future__ import annotations

import argparse
import math
import os
import os.path as osp
import sys
import tempfile

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

MIB = 1 << 20


def _teacher_checkpoint(teacher_cfg: str, folder: str) -> str:
    """A checkpoint of the teacher config's randomly initialised model."""
    from mmdet.registry import MODELS

    from distill.config_files import read_config

    model = MODELS.build(read_config(teacher_cfg, 'teacher config').model)
    path = osp.join(folder, 'teacher.pth')
    torch.save(dict(state_dict=model.state_dict()), path)
    return path


def _image(height: int, width: int, divisor: int):
    """One normalised random image padded to ``divisor``, and its data sample's metainfo."""
    from mmdet.structures import DetDataSample

    from distill.graph.cache_key import SOURCE_FIELD

    pad_h, pad_w = (math.ceil(s / divisor) * divisor for s in (height, width))
    inputs = torch.zeros(1, 3, pad_h, pad_w)
    inputs[..., :height, :width] = torch.randn(1, 3, height, width)
    sample = DetDataSample(metainfo=dict(
        img_path='synthetic.jpg', img_id=0, ori_shape=(height, width), img_shape=(height, width),
        scale_factor=(1.0, 1.0), flip=False, flip_direction=None, pad_shape=(pad_h, pad_w),
        batch_input_shape=(pad_h, pad_w), **{SOURCE_FIELD: 'synthetic'}))
    return inputs, [sample]


def tap_bytes(model, inputs, samples, fp16: bool) -> dict[str, int]:
    """Bytes on disk of each teacher tap's record of the one image (``fp16``: float16)."""
    from distill.graph import TeacherCache

    with tempfile.TemporaryDirectory() as root:
        model.teacher_cache = TeacherCache('size', dict(model.teacher_taps), root, fp16=fp16,
                                           disk_mb=1 << 20)
        model._teacher_step(inputs, samples)  # the teacher's forward; the cache stores it
        out = {}
        for folder, _, files in os.walk(root):
            for name in files:
                tap = osp.basename(folder).rsplit('-', 1)[0]
                out[tap] = out.get(tap, 0) + os.path.getsize(osp.join(folder, name))
        model.teacher_cache = None
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--student', default='configs/coco/gfl_r50_fpn_1x_coco.py')
    parser.add_argument('--teacher', default='configs/coco/gfl_r101_fpn_1x_coco.py')
    parser.add_argument('--recipe', nargs='+', default=['kd_ld_vlr', 'pkd'])
    parser.add_argument('--shape', nargs=2, type=int, default=(800, 1333),
                        metavar=('H', 'W'), help='image size after the resize (default: '
                        "mmdet's COCO 1x, 1333 x 800)")
    parser.add_argument('--images', type=int, default=10000,
                        help='dataset size for the total (default 10,000)')
    args = parser.parse_args(argv)

    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    from distill.cli.train_distill import build_distill_config

    init_default_scope('mmdet')
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        ckpt = _teacher_checkpoint(args.teacher, folder)
        for recipe in args.recipe:
            cfg = build_distill_config(args.student, recipe, args.teacher, ckpt)
            model = MODELS.build(cfg.model).eval()
            divisor = cfg.model.architecture.data_preprocessor.get('pad_size_divisor', 1)
            inputs, samples = _image(*args.shape, divisor)
            sizes = {fp16: tap_bytes(model, inputs, samples, fp16) for fp16 in (False, True)}
            for tap in sorted(sizes[False]):
                rows.append((recipe, tap, sizes[False][tap], sizes[True][tap]))
            rows.append((recipe, 'all taps', sum(sizes[False].values()),
                         sum(sizes[True].values())))
            print(f'[cache_size] {recipe}: padded input {tuple(inputs.shape[2:])}, taps '
                  f'{sorted(sizes[False])}', flush=True)
    print(f'\nTeacher {args.teacher}, student {args.student}, image {args.shape[0]} x '
          f'{args.shape[1]}; dataset of {args.images:,} images (one record each)\n')
    print('| recipe | tap | float32 MiB / image | float16 MiB / image | float32 GiB / dataset '
          '| float16 GiB / dataset |')
    print('|---|---|---|---|---|---|')
    for recipe, tap, b32, b16 in rows:
        print(f'| {recipe} | {tap} | {b32 / MIB:.2f} | {b16 / MIB:.2f} | '
              f'{b32 * args.images / MIB / 1024:.1f} | {b16 * args.images / MIB / 1024:.1f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
