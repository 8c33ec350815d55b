"""tools/train_distill.py with a DDOD and a MOD student (general-distribution option) under
the LD paper's full recipe from a GFL teacher, then the exported student loaded by mmdet's
``init_detector``: the same predictions, byte for byte."""

import json
import subprocess
import sys

import pytest

from tests.cli.test_train_distill import ENV, OPTIONS, TEACHER
from tests.helpers import export_round_trip, save_detector_checkpoint


@pytest.mark.parametrize('student,detector,head', [
    ('configs/tiny/ddod_s_digits.py', 'DDOD', 'DDODPaperHead'),
    ('configs/tiny/mod_s_digits.py', 'FCOS', 'MODHead')])
def test_student_trains_with_kd_ld_vlr_and_exports_to_plain_mmdet(student, detector, head,
                                                                  tmp_path, repo):
    teacher_ckpt = save_detector_checkpoint(str(repo / TEACHER), tmp_path / 'teacher.pth', 1)
    work = tmp_path / 'run'
    cmd = [sys.executable, str(repo / 'tools' / 'train_distill.py'), '--student', student,
           '--teacher', TEACHER, '--teacher-ckpt', teacher_ckpt, '--recipe', 'kd_ld_vlr',
           '--work-dir', str(work), '--cfg-options', *OPTIONS, 'train_cfg.max_epochs=1',
           'model.bbox_head.box_dist=16']
    proc = subprocess.run(cmd, cwd=repo, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logged = [json.loads(line) for p in work.glob('*/vis_data/scalars.json')
              for line in p.read_text().splitlines()]
    train = [x for x in logged if 'loss_main_ld' in x]
    assert train and all(k in train[-1] for k in ('loss_main_kd', 'loss_vlr_ld', 'loss_dfl'))
    model, results = export_round_trip(str(work / student.rsplit('/', 1)[-1]),
                                       str(work / 'epoch_1.pth'), tmp_path)
    assert type(model).__name__ == detector and type(model.bbox_head).__name__ == head
    assert model.bbox_head.reg_max == 16
    assert len(json.loads(results['graph'][1])) > 0
    assert results['graph'][1] == results['export'][1]  # identical predictions, byte for byte
    val = [x for x in logged if 'coco/bbox_mAP' in x]
    assert val[-1]['coco/bbox_mAP'] == results['export'][0]['coco/bbox_mAP']
