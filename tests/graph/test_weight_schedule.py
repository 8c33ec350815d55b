"""Edge weight schedules: each type against hand values per iteration, their refusals, and a
real run: the factor in force logged per iteration (``weight_<edge>``) equals the hand values,
the edge's loss is scaled by it, and a run killed in the middle of a decaying schedule and
resumed logs the same factors and ends with the same student as the unbroken run."""

import pytest
import torch
from mmengine.hooks import Hook

from distill.cli import train_distill
from distill.curves import read_scalars
from distill.errors import RecipeError
from distill.graph.weight_schedule import check_schedule, edge_factor, schedule_factor
from tests.helpers import TINY_RUN

# 3 epochs of 4 iterations: max_iters 12, max_epochs 3
RUN = dict(max_iters=12, max_epochs=3)


def factors(sched, n=12, per_epoch=4):
    return [schedule_factor(sched, i, i // per_epoch, **RUN) for i in range(n)]


def test_hand_values_per_iteration():
    assert factors(dict(type='constant')) == [1.0] * 12
    assert factors(dict(type='linear_warmup', iters=4))[:6] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    # to 0 at the end of epoch 2 (iteration 8): 1 - i / 8
    assert factors(dict(type='linear_decay', end_epoch=2)) == pytest.approx(
        [1, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8, 0, 0, 0, 0])
    # a fraction of the run: 0.5 * 12 = iteration 6
    assert factors(dict(type='linear_decay', end_frac=0.5))[:8] == pytest.approx(
        [1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0, 0])
    cos = factors(dict(type='cosine_decay', end_epoch=2))
    assert cos[0] == 1.0 and cos[4] == pytest.approx(0.5) and cos[8:] == [0.0] * 4
    assert cos[2] == pytest.approx((1 + 2 ** -0.5) / 2) and cos[6] == pytest.approx(
        (1 - 2 ** -0.5) / 2)
    assert factors(dict(type='off', after_epoch=2)) == [1.0] * 8 + [0.0] * 4
    # the last 25 % of 4 epochs: on for round(0.75 * 4) = 3
    assert [schedule_factor(dict(type='off', after_frac=0.75), 0, e, 16, 4)
            for e in range(4)] == [1, 1, 1, 0]
    # several multiply
    both = [dict(type='linear_warmup', iters=2), dict(type='off', after_epoch=1)]
    assert [edge_factor(both, i, i // 4, **RUN) for i in range(6)] == [0.5, 1, 1, 1, 0, 0]
    assert edge_factor([], 5, 1, **RUN) == 1.0


@pytest.mark.parametrize('sched,message', [
    ('off', 'must be a dict or a list'),
    (dict(type='step'), "type one of \\['constant'"),
    (dict(type='off'), "needs exactly one of \\['after_epoch', 'after_frac'\\], got none"),
    (dict(type='off', after_epoch=2, after_frac=0.5), 'exactly one of'),
    (dict(type='off', after_frac=1.5), 'after_frac=1.5 must be a fraction'),
    (dict(type='linear_warmup', iters=0), 'iters=0 must be a whole number'),
    (dict(type='linear_decay', end_epoch=2.5), 'end_epoch=2.5 must be a whole number'),
    (dict(type='cosine_decay', end_frac=0.5, iters=3), "unknown key\\(s\\) \\['iters'\\]"),
])
def test_refusals_name_the_edge(sched, message):
    with pytest.raises(RecipeError, match=f"r.py: edge 'kd'.*{message}"):
        check_schedule(dict(name='kd', weight_schedule=sched), "r.py: edge 'kd'")


RECIPE = '''edges = [
    dict(name='main_kd', loss=dict(type='KDLoss', T=2, loss_weight=0.25),
         student=dict(output='cls_logits'), teacher=dict(output='cls_logits'),
         region=dict(type='MainRegion', weight='score'),
         weight_schedule=[dict(type='linear_warmup', iters=2),
                          dict(type='linear_decay', end_frac=1.0)]),
]
'''
# 8 images, batch 4: 2 iterations per epoch, 3 epochs: max_iters 6
HAND = [0.5, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6]


class Stop(Exception):
    pass


class StopAfterEpoch(Hook):
    """Ends the process's training after the given epoch (its checkpoint saved): a kill."""

    def __init__(self, epoch):
        self.epoch = epoch

    def after_train_epoch(self, runner):
        if runner.epoch == self.epoch:
            raise Stop


def run(tmp_path, work, resume=False, stop_after=None):
    recipe = tmp_path / 'scheduled_kd.py'
    recipe.write_text(RECIPE)
    argv = ['--student', 'configs/tiny/gfl_s_digits.py',
            '--teacher', 'configs/tiny/gfl_l_digits.py',
            '--teacher-ckpt', 'checkpoints/gfl_l_digits_e24_seed0.pth', '--recipe', str(recipe),
            '--seed', '0', '--work-dir', str(work)] + (['--resume'] if resume else [])
    args = train_distill.parse_args(argv)
    args.cfg_options = dict(TINY_RUN, **{'train_cfg.max_epochs': 3})
    runner = train_distill.build_runner(args)
    if stop_after is not None:
        runner.register_hook(StopAfterEpoch(stop_after), 'LOWEST')  # after the checkpoint
    try:
        runner.train()
    except Stop:
        pass
    return runner


def logged(work):
    train, _ = read_scalars(str(work))
    return {r['step']: r for r in train}


def test_a_run_logs_the_hand_factors_and_resumes_them_exactly(tmp_path, repo, monkeypatch):
    monkeypatch.chdir(repo)
    straight = run(tmp_path, tmp_path / 'straight')
    rec = logged(tmp_path / 'straight')
    assert [rec[s]['weight_main_kd'] for s in range(1, 7)] == pytest.approx(HAND)
    assert all(rec[s]['loss_main_kd'] > 0 for s in range(1, 7))

    run(tmp_path, tmp_path / 'split', stop_after=1)  # killed after 2 of 3 epochs
    assert (tmp_path / 'split' / 'last_checkpoint').read_text().endswith('epoch_2.pth')
    resumed = run(tmp_path, tmp_path / 'split', resume=True)
    again = logged(tmp_path / 'split')
    assert resumed.iter == 6
    for s in range(1, 7):  # steps 5 and 6 logged by the resumed process
        assert again[s]['weight_main_kd'] == pytest.approx(HAND[s - 1])
        assert again[s]['loss_main_kd'] == pytest.approx(rec[s]['loss_main_kd'], rel=1e-5)
    a = straight.model.architecture.state_dict()
    b = resumed.model.architecture.state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)


def test_no_progress_outside_a_runner_is_an_error(monkeypatch):
    from types import SimpleNamespace

    from mmengine.logging import MessageHub

    from distill.errors import DistillError
    from distill.graph.algorithm import DistillGraph
    from distill.graph.weight_schedule import training_progress
    hub = MessageHub.get_instance('distill-test-empty-hub')
    monkeypatch.setattr(MessageHub, 'get_current_instance', classmethod(lambda cls: hub))
    assert training_progress() is None
    graph = SimpleNamespace(edge_cfgs=[dict(name='kd', weight_schedule=dict(
        type='off', after_epoch=1))])
    losses = {'loss_kd': torch.tensor(2.0)}
    with pytest.raises(DistillError, match="edge 'kd' has a weight_schedule, but no training"):
        DistillGraph._apply_weight_schedules(graph, losses, torch.zeros(1))
    hub.update_info_dict(dict(iter=3, epoch=1, max_iters=8, max_epochs=2))
    DistillGraph._apply_weight_schedules(graph, losses, torch.zeros(1))
    assert float(losses['loss_kd']) == 0.0 and float(losses['weight_kd']) == 0.0


def test_the_shipped_recipe_with_a_schedule_reads():
    edges, files = train_distill.read_recipes('pkd_off_last25')
    assert files[0].endswith('configs/recipes/pkd_off_last25.py')
    assert edges[0]['weight_schedule'] == dict(type='off', after_frac=0.75)
    # 24 epochs: distillation on for 18, off for the last 6
    on = [edge_factor([edges[0]['weight_schedule']], 0, e, 24 * 125, 24) for e in range(24)]
    assert on == [1.0] * 18 + [0.0] * 6
