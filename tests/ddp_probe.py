"""A hook for the distributed test: each rank writes what its graph holds after training."""

import hashlib
import json
import os

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


def state_digest(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@HOOKS.register_module()
class RankStateProbe(Hook):
    """Writes ``rank<k>.json``: digests of the student's parameters and buffers, of the
    teacher's weights, and the losses of every iteration."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.losses = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append({k: float(v) for k, v in (outputs or {}).items()})

    def after_train(self, runner):
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        student = model.architecture
        out = dict(student=state_digest(dict(student.named_parameters())),
                   student_buffers=state_digest(dict(student.named_buffers())),
                   teacher=state_digest(model.teacher.state_dict()),
                   teacher_training=model.teacher.training, losses=self.losses,
                   world=int(os.environ.get('WORLD_SIZE', 1)),
                   threads=torch.get_num_threads())
        os.makedirs(self.out_dir, exist_ok=True)
        with open(os.path.join(self.out_dir, f'rank{get_rank()}.json'), 'w') as f:
            json.dump(out, f)


@HOOKS.register_module()
class LevelCounterProbe(Hook):
    """Writes ``counters_rank<k>.json``: after every iteration, the student head's level
    counters (``cls_level_pos``, ``reg_level_pos``, DDOD) and this rank's own positives per
    level in that step (recorded from the head's ``get_targets``, before any reduction)."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.steps = []

    def before_train(self, runner):
        from tests.helpers import record_outputs

        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        self.head = getattr(model, 'architecture', model).bbox_head
        self.calls = record_outputs(self.head, 'get_targets')

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        out = self.calls[-1]
        local = [[int(((lab >= 0) & (lab < self.head.num_classes)).sum()) for lab in out[i]]
                 for i in (1, 7)]  # the classification and the regression labels
        self.calls.clear()  # (the targets of one step only)
        self.steps.append(dict(cls=self.head.cls_level_pos.tolist(),
                               reg=self.head.reg_level_pos.tolist(), local=local))

    def after_train(self, runner):
        os.makedirs(self.out_dir, exist_ok=True)
        with open(os.path.join(self.out_dir, f'counters_rank{get_rank()}.json'), 'w') as f:
            json.dump(self.steps, f)
