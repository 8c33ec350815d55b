"""One rank of the two-process test of the distill edges (``tests/graph/test_ddp_edges.py``).

Run as ``python -m tests.graph.ddp_edges_worker SPEC OUT`` with ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` set: joins a gloo group, builds the same graph as the
single process of the test, loads the test's weights (``SPEC``: the graph's ``state_dict``,
the teacher checkpoint and the dataset indices of the 4 images), wraps it in torch's
``DistributedDataParallel``, computes the edge losses of its two images and backpropagates
their sum (DDP averages the gradients over the ranks), and writes ``OUT/rank<r>.pt``: the
edge losses, the region normalisers of its images and the student's gradients.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

import torch
from mmengine.dataset import pseudo_collate

STUDENT = 'configs/tiny/gfl_s_digits.py'
TEACHER = 'configs/tiny/gfl_l_digits.py'


def _edge(name, loss, index, region, normalize='weight'):
    return dict(name=name, loss=loss, student=dict(tap='head', index=index),
                teacher=dict(tap='head', index=index), region=region, normalize=normalize)


#: Every kind of edge: KD and LD, normalised by the region's weight and by its size, on the
#: main region and on the VLR. The weight-normalised edges use weights whose total is well
#: above 1 per image (``ones``, ``iou``), so that the ``clamp(min=1)`` of the normaliser is
#: never what the numbers depend on (the test checks it).
EDGES = [
    _edge('main_kd', dict(type='KDLoss', T=2), 0, dict(type='MainRegion', weight='ones')),
    _edge('main_ld_weight', dict(type='LDLoss', T=10), 1,
          dict(type='MainRegion', weight='ones')),
    _edge('main_ld_count', dict(type='LDLoss', T=10), 1,
          dict(type='MainRegion', weight='score'), normalize='count'),
    _edge('vlr_ld_weight', dict(type='LDLoss', T=10), 1,
          dict(type='VLRRegion', weight='iou')),
    _edge('vlr_ld_count', dict(type='LDLoss', T=10), 1,
          dict(type='VLRRegion', weight='score'), normalize='count'),
]
#: The recipes' Main KD edge (``configs/recipes/kd_ld_vlr.py``): confidence weights normalised
#: by their total. An untrained student's confidence is ~0.01 per prior, so two images' total
#: is below 1 and the ``clamp(min=1)`` after ``reduce_mean`` decides the value (a known
#: defect, see ``test_ddp_edges.py``): its loss is computed, not backpropagated.
CLAMPED_EDGES = [
    _edge('recipe_main_kd', dict(type='KDLoss', T=2), 0,
          dict(type='MainRegion', weight='score')),
]
ALL_EDGES = EDGES + CLAMPED_EDGES


def build_graph(repo, teacher_ckpt: str, num_images: int):
    """The graph (student gfl_s, teacher gfl_l, :data:`ALL_EDGES`) in eval mode, and the data.

    Eval mode: BN on running statistics, so that a batch of 2 on each rank and a batch of 4
    see the same network (BN in train mode would normalise with each batch's statistics).
    The loss path (label assignment included) does not depend on the mode.
    """
    from distill.build import build_train_parts
    from distill.cli.train_distill import build_distill_config

    cfg = build_distill_config(os.path.join(repo, STUDENT), 'none')
    teacher = build_distill_config(os.path.join(repo, TEACHER), 'none').model.architecture
    cfg.model.update(teacher=dict(teacher), teacher_ckpt=teacher_ckpt, edges=ALL_EDGES,
                     pair_names=(STUDENT, TEACHER))
    # 256 x 256 images: a batch needs no padding, so each image's maps are its own
    resize = cfg.train_dataloader.dataset.pipeline[2]
    assert resize.type == 'Resize', resize
    resize.keep_ratio = False
    model, dataset, _ = build_train_parts(cfg, num_images)
    model.eval()
    return model, dataset


def normalisers(model) -> dict:
    """Each edge's normaliser of the last step per image: region weight or region size."""
    out = {}
    for edge in ALL_EDGES:
        w = model.last_regions[edge['name']].double()
        out[edge['name']] = (w > 0).sum(1).double() if edge['normalize'] == 'count' else w.sum(1)
    return out


def edge_step(model, items, forward=None):
    """Edge losses of ``items`` (one batch), and the student's gradients of the sum of the
    :data:`EDGES` losses.

    Args:
        forward (callable, optional): What to call with the batch (a DDP wrapper of
            ``model``); default ``model``.

    Returns:
        tuple: ``losses (dict[str, float])``, ``normalisers (dict[str, Tensor[B]])``,
        ``grads (dict[str, Tensor])`` (student parameters without a gradient are missing).
    """
    forward = forward or model
    data = model.data_preprocessor(pseudo_collate(items), True)
    model.zero_grad(set_to_none=True)
    losses = forward(**data, mode='loss')
    torch.stack([losses[f'loss_{e["name"]}'] for e in EDGES]).sum().backward()
    grads = {n: p.grad.detach().clone() for n, p in model.architecture.named_parameters()
             if p.grad is not None}
    return ({e['name']: float(losses[f'loss_{e["name"]}']) for e in ALL_EDGES},
            normalisers(model), grads)


def main(spec_path: str, out_dir: str) -> None:
    import torch.distributed as dist
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    MMLogger.get_instance('ddp_edges_worker', log_level='WARNING')  # a short log to report
    rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    dist.init_process_group('gloo', rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        spec = torch.load(spec_path, map_location='cpu', weights_only=True)
        init_default_scope('mmdet')
        model, dataset = build_graph(spec['repo'], spec['teacher_ckpt'],
                                     max(spec['indices']) + 1)
        model.load_state_dict(spec['state_dict'], strict=True)
        per_rank = len(spec['indices']) // world
        mine = spec['indices'][rank * per_rank:(rank + 1) * per_rank]
        ddp = DistributedDataParallel(model)  # CPU: no device_ids; averages the gradients
        losses, norms, grads = edge_step(model, [dataset[i] for i in mine], forward=ddp)
        torch.save(dict(rank=rank, indices=mine, losses=losses, norms=norms, grads=grads),
                   os.path.join(out_dir, f'rank{rank}.pt'))
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == '__main__':
    main(*sys.argv[1:3])
