"""FGDRegion against a per-cell loop over the published code's foreground rule."""

import math

import pytest
import torch

import distill  # noqa: F401  (distill.compat before mmrazor)
from distill.regions import FGDRegion, RegionContext


def grid_priors(sizes, strides, offset, side, dtype=torch.float32):
    """Square priors (side ``side * stride``) centred on ``(index + offset) * stride``,
    level-major, row-major: mmdet's anchors (offset 0) or the graph's squares around points
    (offset 0.5)."""
    levels = []
    for (h, w), s in zip(sizes, strides):
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
        cx, cy = (xs.flatten() + offset) * s, (ys.flatten() + offset) * s
        half = side * s / 2
        levels.append(torch.stack([cx - half, cy - half, cx + half, cy + half], 1).to(dtype))
    return levels


def naive_foreground(h, w, stride, boxes):
    """``[[weight]]`` of one image and level: each box covers the cells ``floor(x1 / s)`` ..
    ``ceil(x2 / s)`` (rows likewise), each weighted 1 / (its rows * its columns); the largest
    weight where boxes overlap."""
    out = [[0.0] * w for _ in range(h)]
    for x1, y1, x2, y2 in boxes:
        c0, c1 = math.floor(x1 / stride), math.ceil(x2 / stride)
        r0, r1 = math.floor(y1 / stride), math.ceil(y2 / stride)
        area = 1.0 / ((r1 - r0 + 1) * (c1 - c0 + 1))
        for i in range(h):
            for j in range(w):
                if r0 <= i <= r1 and c0 <= j <= c1:
                    out[i][j] = max(out[i][j], area)
    return out


#: image 0: two overlapping boxes, one inside the other's cells, a box on cell borders;
#: image 1: one box reaching past the map; image 2: no box (all background)
BOXES = [[[3.0, 5.0, 40.5, 30.0], [20.0, 12.0, 31.0, 21.0], [16.0, 16.0, 32.0, 48.0]],
         [[30.0, 2.0, 90.0, 20.5]],
         []]
SIZES, STRIDES = [(6, 7), (3, 4)], [8, 16]


@pytest.mark.parametrize('offset, side', [(0.0, 4 * 2 ** (1 / 3)), (0.5, 8.0)])
def test_fgd_region_matches_the_per_cell_loop(offset, side):
    ctx = RegionContext(priors=grid_priors(SIZES, STRIDES, offset, side),
                        gt_bboxes=[torch.tensor(b).reshape(-1, 4) for b in BOXES])
    got = FGDRegion(strides=STRIDES)(ctx)
    expected = torch.tensor([sum((sum(naive_foreground(h, w, s, boxes), [])
                                  for (h, w), s in zip(SIZES, STRIDES)), [])
                             for boxes in BOXES])
    assert got.shape == (3, 6 * 7 + 3 * 4)
    torch.testing.assert_close(got, expected)
    # stride 8: the overlap keeps the smaller box's (3 x 3 cells) larger weight; image 2 is
    # all background
    assert got[0, :42].max().item() == pytest.approx(1 / (3 * 3))
    assert got[2].abs().sum() == 0
    # image 1, stride 8: rows 0-3 (ceil(20.5 / 8) = 3), columns 3-12 of which 3-6 exist; the
    # weight counts all 4 x 10 cells, as the published code
    assert got[1, :42].gt(0).sum() == 4 * 4
    assert got[1, :42].max().item() == pytest.approx(1 / (4 * 10))
    assert repr(FGDRegion(STRIDES)) == 'FGDRegion(strides=(8.0, 16.0))'


def test_fgd_region_default_strides_no_boxes_and_stride_checks():
    priors = grid_priors(SIZES, STRIDES, 0.0, 8.0)
    ctx = RegionContext(priors=priors, gt_bboxes=[torch.zeros(0, 4), torch.zeros(0, 4)])
    assert FGDRegion()(ctx).shape == (2, 54)  # default strides: the first two of 8 ... 128
    assert FGDRegion()(ctx).abs().sum() == 0
    with pytest.raises(ValueError, match=r'level 1 has stride 32, but its priors are 16 apart'):
        FGDRegion(strides=(8, 32))(ctx)
    with pytest.raises(ValueError, match='one stride per level'):
        FGDRegion(strides=(8,))(ctx)
    with pytest.raises(ValueError, match='must be positive'):
        FGDRegion(strides=())
    # a level one location wide: the spacing is read down the column
    tall = grid_priors([(3, 1)], [16], 0.0, 8.0)
    FGDRegion(strides=(16,))(RegionContext(priors=tall, gt_bboxes=[torch.zeros(0, 4)]))
    with pytest.raises(ValueError, match='level 0 has stride 8'):
        FGDRegion(strides=(8,))(RegionContext(priors=tall, gt_bboxes=[torch.zeros(0, 4)]))
