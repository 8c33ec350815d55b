"""browse_dataset draws boxes where they are; the quick demo prints a COCO AP table."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from distill.cli import browse_dataset, demo
from distill.cli.browse_dataset import PALETTE
from distill.datasets import prepare_embedded

REPO = Path(__file__).resolve().parents[2]


def test_browse_draws_box_edges_on_the_bounded_pixels(tmp_path, data_cache):
    browse_dataset.main([str(REPO / 'configs/tiny/gfl_s_digits.py'), '--split', 'val',
                         '--num', '3', '--out-dir', str(tmp_path), '--scale', '2'])
    assert (tmp_path / 'grid.png').is_file()
    coco = json.loads((prepare_embedded('digits-scenes') / 'annotations' /
                       'instances_val.json').read_text())
    first = coco['images'][0]
    drawn = np.asarray(Image.open(tmp_path / (Path(first['file_name']).stem + '.png')))
    assert drawn.shape[:2] == (2 * first['height'], 2 * first['width'])
    ann = [a for a in coco['annotations'] if a['image_id'] == first['id']][-1]  # drawn last
    x, y, w, h = ann['bbox']
    color = PALETTE[ann['category_id'] - 1]
    # top-left corner of the outline = top-left pixel of the box at scale 2
    assert tuple(drawn[int(2 * y), int(2 * x)]) == color
    assert tuple(drawn[int(2 * (y + h)) - 1, int(2 * (x + w)) - 1]) == color


def test_quick_demo_prints_coco_table(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    demo.main(['--quick', '--work-dir', str(tmp_path)])
    out = capsys.readouterr().out
    assert 'COCO bbox AP on digits-scenes val' in out
    header = [line for line in out.splitlines() if line.startswith('| model')][0]
    assert [c.strip() for c in header.strip('|').split('|')][1:] == \
        ['AP', 'AP50', 'AP75', 'APs', 'APm', 'APl']
