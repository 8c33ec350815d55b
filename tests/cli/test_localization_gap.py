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


TEACHER = 'configs/tiny/gfl_l_digits.py'
SHIPPED = {'student': (STUDENT, 'checkpoints/gfl_s_digits_e24_seed0.pth'),
           'teacher': (TEACHER, 'checkpoints/gfl_l_digits_e24_seed0.pth')}


def _naive_positive_quality(repo, num_images, T=10.0):
    """Per student positive, one at a time: both models' IoU with the assigned GT, and LD.

    Independent of the tool and of the distill graph: each detector is built from its own
    config with mmdet's registry and loaded with mmengine's ``load_checkpoint``; the positives
    are those of ATSSAssigner (the student's ``train_cfg.assigner``) run on the student's
    priors; each box side is ``stride * sum_i i * softmax(logits)_i`` measured from the
    prior's centre; LD is ``T^2 * sum_sides KL(softmax(t / T) || softmax(s / T))``.
    """
    from mmdet.registry import DATASETS, MODELS, TASK_UTILS
    from mmdet.structures.bbox import bbox_overlaps
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    from mmengine.structures import InstanceData

    init_default_scope('mmdet')
    cfgs, models = {}, {}
    for role, (config, ckpt) in SHIPPED.items():
        cfgs[role] = Config.fromfile(repo / config)
        models[role] = MODELS.build(cfgs[role].model)
        load_checkpoint(models[role], str(repo / ckpt), map_location='cpu', strict=True,
                        logger='silent')
        models[role].eval()
    dataset = DATASETS.build(cfgs['student'].val_dataloader.dataset)  # no Random* transform
    # one batch of all the images: the same padding as the tool's single batch
    data = models['student'].data_preprocessor(
        pseudo_collate([dataset[i] for i in range(num_images)]), False)
    with torch.no_grad():
        reg = {role: m.bbox_head(m.extract_feat(data['inputs']))[1]
               for role, m in models.items()}
    head = models['student'].bbox_head
    sizes = [r.shape[-2:] for r in reg['student']]
    priors = head.prior_generator.grid_priors(sizes, device=data['inputs'].device)
    strides = [s[0] for s in head.prior_generator.strides]
    assigner = TASK_UTILS.build(cfgs['student'].model.train_cfg.assigner)
    n = head.reg_max + 1
    out = {'student_iou': [], 'teacher_iou': [], 'ld': []}
    for b, sample in enumerate(data['data_samples']):
        gt = sample.gt_instances
        assign = assigner.assign(InstanceData(priors=torch.cat(priors)),
                                 [len(p) for p in priors], gt)
        for flat in assign.gt_inds.nonzero().flatten().tolist():
            level = 0
            while flat - sum(len(p) for p in priors[:level]) >= len(priors[level]):
                level += 1
            k = flat - sum(len(p) for p in priors[:level])
            y, x = divmod(k, int(sizes[level][1]))
            prior = priors[level][k]
            cx, cy = float(prior[0] + prior[2]) / 2, float(prior[1] + prior[3]) / 2
            target = gt.bboxes[int(assign.gt_inds[flat]) - 1]
            logits = {role: r[level][b, :, y, x].reshape(4, n) for role, r in reg.items()}
            for role, z in logits.items():
                d = (z.softmax(-1) * torch.arange(n, dtype=z.dtype)).sum(-1) * strides[level]
                box = torch.stack([cx - d[0], cy - d[1], cx + d[2], cy + d[3]])
                out[f'{role}_iou'].append(
                    bbox_overlaps(box[None], target[None], is_aligned=True)[0].item())
            p_t = (logits['teacher'] / T).softmax(-1)
            kl = (p_t * ((logits['teacher'] / T).log_softmax(-1)
                         - (logits['student'] / T).log_softmax(-1))).sum()
            out['ld'].append(kl.item() * T * T)
    return {k: torch.tensor(v) for k, v in out.items()}


def test_different_teacher_matches_naive_per_positive_computation(repo, capsys):
    """Shipped GFL-S student vs shipped GFL-L teacher on 2 val images: the tool's per-positive
    IoUs, LD and the reported mean IoUs, gap, 'teacher better' share and mean LD equal a naive
    per-positive loop over mmdet's own forward, ATSS assignment, decoding and bbox_overlaps."""
    res = localization_gap.main([
        '--student', str(repo / STUDENT), '--student-ckpt', str(repo / SHIPPED['student'][1]),
        '--teacher', str(repo / TEACHER), '--teacher-ckpt', str(repo / SHIPPED['teacher'][1]),
        '--split', 'val', '--num-images', '2', '--batch', '2'])
    ref = _naive_positive_quality(repo, 2)
    assert len(ref['ld']) > 0 and len(res['ld']) == len(ref['ld'])
    # the two models differ there, so the comparison below is not student-against-itself
    assert (ref['student_iou'] - ref['teacher_iou']).abs().max() > 1e-3
    assert ref['ld'].min() > 1e-3
    for key in ('student_iou', 'teacher_iou', 'ld'):
        torch.testing.assert_close(res[key].float(), ref[key].float(), rtol=1e-5, atol=1e-5,
                                   msg=lambda m, key=key: f'{key}: {m}')
    for role in ('student', 'teacher'):
        assert res[f'{role}_iou'].mean().item() == pytest.approx(
            ref[f'{role}_iou'].mean().item(), abs=1e-5)
    gap = ref['teacher_iou'].mean().item() - ref['student_iou'].mean().item()
    better = (ref['teacher_iou'] > ref['student_iou']).float().mean().item()
    assert 0 < better < 1  # a share that a swapped or self-compared teacher would change
    assert (res['teacher_iou'].mean() - res['student_iou'].mean()).item() == pytest.approx(
        gap, abs=1e-5)
    assert (res['teacher_iou'] > res['student_iou']).float().mean().item() == pytest.approx(better)
    assert res['ld'].mean().item() == pytest.approx(ref['ld'].mean().item(), rel=1e-5)
    out = capsys.readouterr().out
    assert f'gap (teacher - student mean IoU): {gap:+.3f}' in out
    assert (f'teacher better on {better:.0%} of the positives; mean LD (T=10) student vs '
            f'teacher {ref["ld"].mean().item():.3f}') in out
