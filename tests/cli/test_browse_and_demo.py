"""browse_dataset draws boxes where they are; the quick demo prints a COCO AP table."""

import json
from pathlib import Path

import numpy as np
import pytest
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


def test_quick_demo_trains_teacher_and_students_and_prints_the_table(tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.chdir(REPO)
    demo.main(['--quick', '--train-teacher', '--work-dir', str(tmp_path)])
    out = capsys.readouterr().out
    rows = [[c.strip() for c in line.strip('|').split('|')] for line in out.splitlines()
            if line.startswith('| ')]
    assert rows[0][:8] == ['model', 'seeds', 'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl']
    assert [r[0] for r in rows[1:]] == ['teacher', 'student (none)', 'student + kd',
                                        'student + ld', 'student + pkd']
    assert '[compare] teacher cache on' in out
    for name in ('comparison.md', 'comparison.csv', 'comparison.png', 'comparison_curves.png'):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / 'teacher_train' / 'DONE').is_file()
    for recipe in ('none', 'kd', 'ld', 'pkd'):
        assert (tmp_path / recipe / 'seed0' / 'final_metrics.json').is_file()
        assert (tmp_path / recipe / 'seed0' / 'curves.png').is_file()
    # a second call reuses the teacher and every finished run, and prints the same table
    demo.main(['--quick', '--train-teacher', '--work-dir', str(tmp_path)])
    again = capsys.readouterr().out
    assert 'reusing the teacher' in again and again.count(': reused ...') == 4
    assert [line for line in again.splitlines() if line.startswith('| ')] == \
        [line for line in out.splitlines() if line.startswith('| ')]


def test_shipped_teacher_is_verified_and_fits_its_config(tmp_path, monkeypatch):
    """The demo's teacher: its sha256 matches the manifest, its weights fit the config key for
    key; a damaged copy is refused with the file named."""
    import shutil

    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from distill.checkpoint import load_weights_strict
    from distill.errors import CheckpointError

    path = demo.shipped_teacher()
    manifest = json.loads((REPO / 'checkpoints' / 'MANIFEST.json').read_text())
    entry = manifest[demo.TEACHER_NAME]
    assert entry['config'] == demo.TEACHER and entry['seed'] == 0 and entry['epochs'] == 24
    init_default_scope('mmdet')
    model = MODELS.build(Config.fromfile(REPO / demo.TEACHER).model)
    load_weights_strict(model, path, role='teacher')
    # a damaged copy next to a copied manifest: refused, naming the file
    (tmp_path / 'checkpoints').mkdir()
    shutil.copy(REPO / 'checkpoints' / 'MANIFEST.json', tmp_path / 'checkpoints')
    data = bytearray(open(path, 'rb').read())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / 'checkpoints' / demo.TEACHER_NAME).write_bytes(bytes(data))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match='has sha256 .* the file is damaged'):
        demo.shipped_teacher()
