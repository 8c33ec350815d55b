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
