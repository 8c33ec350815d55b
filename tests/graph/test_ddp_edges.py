"""Two processes (DDP on gloo) give every distill edge the loss and the gradient of one process.

The README's claim: the distill losses do not depend on the GPU count. Each edge divides by
its region's normaliser summed over the batch and averaged over the ranks (``reduce_mean``), so
that the mean over ranks of the per-rank losses is the loss of all their images as one batch,
and DDP's averaged gradient is that loss's gradient. The ranks get images with different
numbers of objects (different region sizes); with each rank dividing by its own normaliser
instead, the mean would differ (checked: the test can tell).

The recipes' Main KD edge (confidence weights, normalised by their total) is checked where its
total weight per rank is below 1 (an untrained student's ~0.01 confidences): a normaliser
clamped at 1 there would turn the mean into a batch-dependent sum (it was, until this test).
"""

import os
import re
import socket
import subprocess
import sys
import time

import pytest
import torch
from mmengine.registry import init_default_scope

from tests.graph.ddp_edges_worker import CLAMPED_EDGES, EDGES, build_graph, edge_step

WORLD = 2
TIMEOUT = 180  # seconds for both workers together (they take ~20 s)
REL = 5e-5  # float32: batches of 2 and of 4 round differently
STUDENT_CKPT = 'checkpoints/gfl_s_digits_e24_seed0.pth'
TEACHER_CKPT = 'checkpoints/gfl_l_digits_e24_seed0.pth'
ZERO_AT_INIT = re.compile(r'backbone\.layer\d\.\d\.(conv1|bn1|conv2)\.\w+')


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _run_workers(repo, spec, out):
    """Start the ranks, wait for all (or the first failure), return nothing or fail loudly."""
    port = _free_port()
    procs, logs = [], []
    for rank in range(WORLD):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
                   MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), OMP_NUM_THREADS='1',
                   PYTHONPATH=f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        if os.path.exists('/sys/class/net/lo'):
            env['GLOO_SOCKET_IFNAME'] = 'lo'  # loopback only
        log = open(out / f'rank{rank}.log', 'w+')
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, '-m', 'tests.graph.ddp_edges_worker', str(spec), str(out)],
            cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + TIMEOUT
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.returncode not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p in procs:  # a failed rank leaves the other one waiting in a collective
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    reports = []
    for rank, (p, log) in enumerate(zip(procs, logs)):
        log.seek(0)
        text = log.read()
        log.close()
        start = text.rfind('Traceback (most recent call last)')  # the error, else the end
        text = text[start:] if start >= 0 else text
        reports.append(f'--- rank {rank}: exit status {p.returncode} ---\n{text[-4000:]}')
    assert all(p.returncode == 0 for p in procs), (
        f'a worker failed or ran past {TIMEOUT} s:\n' + '\n'.join(reports))


@pytest.fixture(scope='module')
def runs(tmp_path_factory, repo):
    """The 4 images as one batch in this process, and as 2 + 2 on two DDP ranks.

    Trained teacher and student (the shipped digits checkpoints), but the student's class
    predictor at its initialisation. Trained weights make each location's loss depend on the
    image, so that dividing by each rank's own normaliser gives another mean (with untrained
    weights every location's loss is about the same, and the two means agree to 1e-4: the test
    could not tell them apart). The class predictor at its init keeps the student's
    confidences at ~0.01, the situation of the clamped Main KD test.

    Returns:
        tuple: ``single`` (losses, normalisers, gradients) and ``ranks`` (what each wrote).
    """
    tmp = tmp_path_factory.mktemp('ddp_edges')
    teacher_ckpt = str(repo / TEACHER_CKPT)
    init_default_scope('mmdet')
    model, dataset = build_graph(str(repo), teacher_ckpt, 16)
    trained = torch.load(repo / STUDENT_CKPT, map_location='cpu', weights_only=True)['state_dict']
    kept = {k: v for k, v in trained.items() if not k.startswith('bbox_head.gfl_cls.')}
    missing = model.architecture.load_state_dict(kept, strict=False).missing_keys
    assert sorted(missing) == ['bbox_head.gfl_cls.bias', 'bbox_head.gfl_cls.weight'], missing
    # 4 images: rank 0 gets the two with the fewest objects, rank 1 the two with the most
    counts = sorted((len(dataset[i]['data_samples'].gt_instances), i) for i in range(16))
    indices = [i for _, i in counts[:2] + counts[-2:]]
    gts = [len(dataset[i]['data_samples'].gt_instances) for i in indices]
    assert sum(gts[:2]) < sum(gts[2:]), gts

    single = edge_step(model, [dataset[i] for i in indices])
    spec = tmp / 'spec.pt'
    torch.save(dict(repo=str(repo), teacher_ckpt=teacher_ckpt, indices=indices,
                    state_dict=model.state_dict()), spec)
    _run_workers(repo, spec, tmp)
    ranks = [torch.load(tmp / f'rank{r}.pt', weights_only=True) for r in range(WORLD)]
    assert [r['indices'] for r in ranks] == [indices[:2], indices[2:]]
    return single, ranks


def _per_rank(ranks, name):
    """Each rank's normaliser and loss of edge ``name`` (float64)."""
    norms = torch.stack([r['norms'][name].sum() for r in ranks])
    losses = torch.tensor([r['losses'][name] for r in ranks], dtype=torch.float64)
    return norms, losses


def test_two_processes_give_each_edge_the_single_process_loss_and_gradient(runs):
    (losses, norms, grads), ranks = runs
    assert len(grads) == len(ranks[0]['grads'])  # every student parameter, on both sides
    for edge in EDGES:
        name = edge['name']
        # the ranks saw the single process's regions, image by image ...
        torch.testing.assert_close(torch.cat([r['norms'][name] for r in ranks]), norms[name])
        per_rank, rank_losses = _per_rank(ranks, name)
        # ... which differ between ranks; and each rank's normaliser is at least 1
        assert per_rank[1] > 1.5 * per_rank[0] and per_rank[0] >= 1, (name, per_rank)
        assert (rank_losses > 0).all(), (name, rank_losses)
        assert float(rank_losses.mean()) == pytest.approx(losses[name], rel=REL), name
        # Each rank dividing by its own normaliser instead (no reduce_mean) gives another mean:
        # the test tells the two apart by far more than its tolerance (here 2-4.5 %).
        local = rank_losses * per_rank.mean() / per_rank
        assert abs(float(local.mean()) / losses[name] - 1) > 20 * REL, (name, local, losses)

    # DDP averaged the gradients: both ranks hold the same, the single process's gradient
    assert ranks[0]['grads'].keys() == ranks[1]['grads'].keys() == grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(ranks[0]['grads'][name], ranks[1]['grads'][name],
                                   rtol=0, atol=0, msg=name)
        scale = float(g.abs().max())
        # mmdet's ResNet starts its residual branches at zero (zero_init_residual: the last BN
        # weight of each block is 0), so their first layers get no gradient yet; all else does
        assert scale > 0 or ZERO_AT_INIT.fullmatch(name), name
        torch.testing.assert_close(ranks[0]['grads'][name], g, rtol=1e-4, atol=1e-5 * scale,
                                   msg=lambda m, n=name: f'{n}: {m}')


def test_recipe_main_kd_with_a_small_total_weight_is_the_single_process_loss(runs):
    (losses, norms, _), ranks = runs
    for edge in CLAMPED_EDGES:
        name = edge['name']
        per_rank, rank_losses = _per_rank(ranks, name)
        # the situation under test: below 1 on each rank, above 1 over the 4 images
        assert per_rank.mean() < 1 < norms[name].sum(), (name, per_rank, norms[name])
        assert float(rank_losses.mean()) == pytest.approx(losses[name], rel=REL), name
