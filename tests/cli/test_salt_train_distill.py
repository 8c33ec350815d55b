"""tools/train_distill.py with a SALT-Net student under a teacher's recipe and SDR in one run
(``--recipe kd_ld_vlr sdr``), then the exported student loaded by mmdet's ``init_detector``."""

import json
import subprocess
import sys

from tests.cli.test_train_distill import ENV, OPTIONS, TEACHER
from tests.helpers import export_round_trip, save_detector_checkpoint

STUDENT = 'configs/tiny/salt_s_digits.py'


def test_salt_student_with_a_teacher_and_sdr_exports_to_plain_mmdet(tmp_path, repo):
    teacher_ckpt = save_detector_checkpoint(str(repo / TEACHER), tmp_path / 'teacher.pth', 1)
    work = tmp_path / 'run'
    cmd = [sys.executable, str(repo / 'tools' / 'train_distill.py'), '--student', STUDENT,
           '--teacher', TEACHER, '--teacher-ckpt', teacher_ckpt, '--recipe', 'kd_ld_vlr', 'sdr',
           '--work-dir', str(work), '--cfg-options', *OPTIONS, 'train_cfg.max_epochs=1']
    proc = subprocess.run(cmd, cwd=repo, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logged = [json.loads(line) for p in work.glob('*/vis_data/scalars.json')
              for line in p.read_text().splitlines()]
    train = [x for x in logged if 'loss_sdr' in x]
    assert train and all(k in train[-1] for k in ('loss_main_kd', 'loss_main_ld', 'loss_vlr_ld',
                                                  'loss_bbox_stage1'))
    model, results = export_round_trip(str(work / 'salt_s_digits.py'),
                                       str(work / 'epoch_1.pth'), tmp_path)
    assert type(model).__name__ == 'SALTNet' and type(model.bbox_head).__name__ == 'SALTHead'
    assert len(json.loads(results['graph'][1])) > 0
    assert results['graph'][1] == results['export'][1]  # identical predictions, byte for byte
    val = [x for x in logged if 'coco/bbox_mAP' in x]
    assert val[-1]['coco/bbox_mAP'] == results['export'][0]['coco/bbox_mAP']
