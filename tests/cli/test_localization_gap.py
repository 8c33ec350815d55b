"""localization_gap decodes boxes as GFL does and compares student and teacher at the positives."""

import pytest
import torch

from distill.cli import localization_gap

from ..helpers import save_detector_checkpoint

STUDENT = 'configs/tiny/gfl_s_digits.py'


def test_decode_matches_hand_computed_expectation():
    """Box side = stride x sum_i i * softmax(logits)_i, measured from the prior's centre."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    init_default_scope('mmdet')
    head = MODELS.build(Config.fromfile(STUDENT).model).bbox_head
    n = head.reg_max + 1
    g = torch.Generator().manual_seed(0)
    reg = torch.randn(3, 4 * n, generator=g)
    anchors = torch.tensor([[0., 0., 16., 16.], [8., 24., 40., 56.], [100., 40., 164., 104.]])
    strides = torch.tensor([8., 16., 32.])
    got = localization_gap.decode_boxes(head, reg, anchors, strides)
    for m in range(3):
        cx, cy = float(anchors[m, 0] + anchors[m, 2]) / 2, float(anchors[m, 1] + anchors[m, 3]) / 2
        d = []
        for side in range(4):
            z = reg[m, side * n:(side + 1) * n].tolist()
            e = [torch.tensor(v).exp().item() for v in z]
            d.append(sum(i * p / sum(e) for i, p in enumerate(e)) * float(strides[m]))
        expected = [cx - d[0], cy - d[1], cx + d[2], cy + d[3]]
        assert got[m].tolist() == pytest.approx(expected, rel=1e-5)


def test_teacher_identical_to_student_gives_identical_ious_and_zero_ld(repo, tmp_path, capsys):
    ckpt = save_detector_checkpoint(repo / STUDENT, tmp_path / 's.pth', seed=3)
    res = localization_gap.main([
        '--student', str(repo / STUDENT), '--student-ckpt', ckpt, '--teacher', str(repo / STUDENT),
        '--teacher-ckpt', ckpt, '--split', 'val', '--num-images', '3', '--batch', '2'])
    assert len(res['ld']) > 0  # ATSS gives positives whatever the weights
    torch.testing.assert_close(res['student_iou'], res['teacher_iou'])
    assert res['ld'].abs().max().item() < 1e-5
    assert ((res['student_iou'] >= 0) & (res['student_iou'] <= 1)).all()
    out = capsys.readouterr().out
    assert 'teacher better on 0% of the positives' in out and '| student |' in out
    assert 'gap (teacher - student mean IoU): +0.000' in out
    assert res['num_images'] == 3 and 'val, 3 images, ' in out
