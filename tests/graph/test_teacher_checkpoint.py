"""A distillation run's checkpoint (keys ``architecture.*``) used as a teacher checkpoint.

``load_weights_strict`` takes the student out of such a checkpoint: a distilled gfl_s can
teach the next gfl_s. The checkpoint here is a Runner-style one (mmengine's own
``save_checkpoint`` of ``meta``, ``state_dict`` and ``optimizer``) of a graph that did one
real training step, so that its weights and BN statistics are its own.
"""

import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import get_state_dict, save_checkpoint, weights_to_cpu

from distill.build import build_train_parts
from distill.checkpoint import CheckpointError
from distill.cli.train_distill import build_distill_config
from tests.helpers import save_detector_checkpoint

GFL_S = 'configs/tiny/gfl_s_digits.py'
GFL_L = 'configs/tiny/gfl_l_digits.py'
PREFIX = 'architecture.'


@pytest.fixture(autouse=True)
def _scope():
    init_default_scope('mmdet')


def save_run_checkpoint(cfg, path, seed):
    """One training step of ``cfg``'s graph, saved as a Runner does after an epoch."""
    model, dataset, optim = build_train_parts(cfg, 2, seed)
    data = model.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), True)
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    optim.update_params(loss)
    save_checkpoint(dict(meta=dict(epoch=1, iter=1, seed=seed),
                         state_dict=weights_to_cpu(get_state_dict(model)),
                         optimizer=optim.state_dict()), str(path))
    return str(path)


def test_a_distill_runs_student_teaches_the_same_config(tmp_path, repo):
    teacher_ckpt = save_detector_checkpoint(GFL_L, tmp_path / 'gfl_l.pth', 1)
    run = save_run_checkpoint(build_distill_config(
        str(repo / GFL_S), 'kd_ld_vlr', str(repo / GFL_L), teacher_ckpt), tmp_path / 'run.pth', 5)
    saved = torch.load(run, weights_only=True)['state_dict']
    student = {k[len(PREFIX):]: v for k, v in saved.items() if k.startswith(PREFIX)}
    assert student and int(student['backbone.bn1.num_batches_tracked']) == 1  # it trained

    # gfl_s distilled from gfl_l now teaches a fresh gfl_s (built with another seed)
    cfg = build_distill_config(str(repo / GFL_S), 'kd_ld_vlr', str(repo / GFL_S), run)
    graph, _, _ = build_train_parts(cfg, 1, seed=0)
    got = graph.teacher.state_dict()
    assert got.keys() == student.keys()
    for k, v in student.items():
        assert torch.equal(got[k], v), k
    fresh = graph.architecture.state_dict()  # not what the teacher would be by chance
    assert not torch.equal(fresh['bbox_head.gfl_reg.weight'], got['bbox_head.gfl_reg.weight'])
    assert not torch.equal(fresh['backbone.bn1.running_mean'], got['backbone.bn1.running_mean'])


def test_a_distill_checkpoint_of_another_student_is_refused_naming_the_file(tmp_path, repo):
    # a baseline run of gfl_l through the graph: its student is a gfl_l, not a gfl_s
    run = save_run_checkpoint(build_distill_config(str(repo / GFL_L), 'none'),
                              tmp_path / 'gfl_l_run.pth', 3)
    cfg = build_distill_config(str(repo / GFL_S), 'kd_ld_vlr', str(repo / GFL_S), run)
    with pytest.raises(CheckpointError) as err:
        build_train_parts(cfg, 1)
    msg = str(err.value)
    assert f'teacher checkpoint {run!r} does not fit the teacher config' in msg, msg
    assert 'shape mismatch' in msg and 'unexpected' in msg, msg  # ResNet-50 vs ResNet-18
