"""Paired comparisons: at one seed every recipe starts its student from the same weights and
feeds it the same batches, whatever the recipe builds besides it (a teacher, adapters); the
extra modules' draws are reproducible. Without the graph's own stream for those modules
(mutation: ``own_stream`` replaced by a no-op) the students' initial weights differ."""

import contextlib

import pytest
import torch
from mmengine.hooks import Hook

from distill.cli import train_distill
from distill.graph import algorithm
from tests.helpers import TINY_RUN

STUDENT = 'configs/tiny/gfl_s_digits.py'
TEACHER = 'configs/tiny/gfl_l_digits.py'
TEACHER_CKPT = 'checkpoints/gfl_l_digits_e24_seed0.pth'


class Recorder(Hook):
    """The student's weights when training starts (after ``init_weights``) and the images
    of every batch."""

    def __init__(self):
        self.weights, self.batches = None, []

    def before_train(self, runner):
        student = runner.model.architecture
        self.weights = {k: v.detach().clone() for k, v in student.state_dict().items()}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.batches.append([s.img_path for s in data_batch['data_samples']])


def start(tmp_path, recipe: str, seed: int = 0):
    """Train ``recipe`` for one epoch of 4 batches; returns the recorder and the graph."""
    args = train_distill.parse_args([
        '--student', STUDENT, '--teacher', TEACHER, '--teacher-ckpt', TEACHER_CKPT,
        '--recipe', recipe, '--seed', str(seed), '--work-dir', str(tmp_path / recipe)])
    args.cfg_options = dict(TINY_RUN, **{'train_dataloader.dataset.indices': 16,
                                         'train_cfg.max_epochs': 1})
    runner = train_distill.build_runner(args)
    recorder = Recorder()
    runner.register_hook(recorder, 'HIGHEST')
    runner.train()
    return recorder, runner.model


@pytest.fixture(scope='module')
def runs(tmp_path_factory, repo, monkeypatch_module):
    monkeypatch_module.chdir(repo)
    tmp = tmp_path_factory.mktemp('paired')
    return {r: start(tmp, r) for r in ('none', 'pkd', 'crosskd')}


@pytest.fixture(scope='module')
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def same_weights(a: dict, b: dict) -> list[str]:
    """The names whose tensors differ."""
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def test_every_recipe_starts_from_the_same_student_and_batches(runs):
    base, _ = runs['none']
    assert len(base.batches) == 4 and len({p for b in base.batches for p in b}) == 16
    for recipe in ('pkd', 'crosskd'):
        rec, graph = runs[recipe]
        assert graph.teacher is not None
        assert same_weights(rec.weights, base.weights) == [], recipe
        assert rec.batches == base.batches, recipe
    # crosskd between these widths trains adapters; they are drawn too
    assert len(runs['crosskd'][1].adapters) > 0 or len(runs['pkd'][1].adapters) > 0


def test_another_seed_gives_another_student(runs, tmp_path, repo, monkeypatch):
    monkeypatch.chdir(repo)
    other, _ = start(tmp_path, 'none', seed=1)
    assert same_weights(other.weights, runs['none'][0].weights)
    assert other.batches != runs['none'][0].batches


def test_extra_modules_are_reproducible_and_without_own_stream_the_student_moves(
        runs, tmp_path, repo, monkeypatch):
    monkeypatch.chdir(repo)
    _, graph = runs['pkd']
    again, graph2 = start(tmp_path / 'again', 'pkd')
    for name, module in graph.adapters.items():
        for k, v in module.state_dict().items():
            # trained one epoch from the same draws on the same batches: equal
            torch.testing.assert_close(graph2.adapters[name].state_dict()[k], v)
    monkeypatch.setattr(algorithm, 'own_stream', lambda tag: contextlib.nullcontext())
    moved, _ = start(tmp_path / 'mutant', 'pkd')
    assert same_weights(moved.weights, runs['none'][0].weights), \
        'the mutation left the student unchanged: the test cannot see the stream'
