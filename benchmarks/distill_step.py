"""Cost of one distillation step vs its floor (student step + teacher no-grad forward).

Usage::

    python benchmarks/distill_step.py [--pair tiny|coco] [--rounds 16] [--batch 2]
        [--recipe kd_ld_vlr [crosskd pkd ...]] [--cache] [--cross-bound] [--device cpu|cuda]
        [--amp] [--no-memory]

Models (``--pair``): ``tiny`` (default), the tiny GFL pair (student
``configs/tiny/gfl_s_digits.py``, R18 1/4 width; teacher ``configs/tiny/gfl_l_digits.py``, R50
1/4 width) on ``--batch`` digits-scenes training images (long side 256); ``coco``, the LD and
CrossKD papers' COCO pair (student ``configs/coco/gfl_r50_fpn_1x_coco.py``, teacher
``configs/coco/gfl_r101_fpn_1x_coco.py``: full widths, 4-conv 256-channel heads, P3-P7) with
the COCO pipeline (images resized to 800 x 1333 at most), on digits-scenes images written as a
COCO folder (the timing does not depend on the pixels; the mmrazor and mmdet variants are left
out there). Each round times, one after the other on the same batch:

* ``student``: a plain student training step (forward, loss, backward, optimizer);
* ``teacher``: a teacher forward under ``no_grad`` (backbone, neck, head);
* ``graph:<recipe>``: a ``DistillGraph`` step with each ``--recipe`` (one variant each, all
  in the same rounds);
* ``cached:<recipe>`` (with ``--cache``): the same graph step with a warm teacher-output
  cache (:mod:`distill.graph.teacher_cache`, in memory): the teacher's records are read back
  instead of its forward, so its ratio to the student step alone is the one that matters;
* ``mmrazor``: mmrazor 1.0's ``SingleTeacherDistill`` + ``ConfigurableDistiller``, with KL
  losses (``KLDivergence``) on the class and box logits of every level;
* ``mmdet_ld``: mmdet 3.3's ``KnowledgeDistillationSingleStageDetector`` + ``LDHead`` (Main LD);
* ``cross_bound`` (with ``--cross-bound``): only the teacher head's last tower convs and
  predictors, forward and input gradient, on inputs of the cross path's shapes
  (:class:`CrossBound`); reported as ``(floor + that) / floor``, the least any CrossKD step
  can cost.

and reports, for each distillation variant, the median over rounds of
``step / (student + teacher)`` and of ``step / student`` (ratios taken per round: the machine
drifts). Memory: each of
``student`` and ``graph`` runs alone in a fresh process, since a process's peak RSS cannot be
split between variants. On CPU it prints the peak RSS (which the imports dominate) and the
steps' own peak above the RSS once the models are built; on CUDA, peak allocated memory.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import distill  # noqa: E402,F401
from distill.build import build_train_parts  # noqa: E402
from distill.cli.common import load_config  # noqa: E402
from distill.cli.train_distill import build_distill_config  # noqa: E402

STUDENT = str(REPO / 'configs/tiny/gfl_s_digits.py')
TEACHER = str(REPO / 'configs/tiny/gfl_l_digits.py')
#: --pair coco: the papers' GFL R101 -> R50 (no ImageNet weights: nothing is downloaded, and
#: the timing does not depend on the values)
COCO_STUDENT = str(REPO / 'configs/coco/gfl_r50_fpn_1x_coco.py')
COCO_TEACHER = str(REPO / 'configs/coco/gfl_r101_fpn_1x_coco.py')
NO_PRETRAINED = {'model.backbone.init_cfg': None}
BASELINES = ('student', 'teacher')
OTHERS = ('mmrazor', 'mmdet_ld')


@dataclass(frozen=True)
class Pair:
    """The models a benchmark run times, and the config options both need."""

    title: str
    student: str
    teacher: str
    options: dict


def make_pair(name: str, tmp: Path) -> Pair:
    """``tiny``, or ``coco`` (its COCO folder written under ``tmp``)."""
    if name == 'tiny':
        return Pair('tiny GFL pair', STUDENT, TEACHER, {})
    from mmdet.datasets import CocoDataset

    from distill.datasets.registry import write_coco_folder

    root = write_coco_folder(tmp / 'coco', CocoDataset.METAINFO['classes'])
    return Pair('COCO GFL R101 -> R50 (800 x 1333 pipeline)', COCO_STUDENT, COCO_TEACHER,
                dict(NO_PRETRAINED, **{'train_dataloader.dataset.data_root': f'{root}/'}))


def teacher_checkpoint(path: Path, pair: Pair) -> str:
    """A teacher checkpoint (its initial weights: the timing does not depend on the values)."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(load_config(pair.teacher, pair.options).model)
    model.init_weights()
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return str(path)


def razor_config(cfg, ckpt: str) -> dict:
    """mmrazor's own way: recorders on the head's conv outputs, a KL loss per level."""
    student = dict(cfg.model.architecture)
    teacher = dict(load_config(TEACHER).model, _scope_='mmdet')
    recorders = dict(cls=dict(type='ModuleOutputs', source='bbox_head.gfl_cls'),
                     reg=dict(type='ModuleOutputs', source='bbox_head.gfl_reg'))
    levels = len(student['bbox_head']['anchor_generator']['strides'])
    losses, mappings = {}, {}
    for tap, tau, weight in (('cls', 2, 0.25), ('reg', 10, 0.25)):
        for i in range(levels):
            name = f'loss_{tap}{i}'
            losses[name] = dict(type='KLDivergence', tau=tau, loss_weight=weight)
            mappings[name] = dict(
                preds_S=dict(from_student=True, recorder=tap, record_idx=i),
                preds_T=dict(from_student=False, recorder=tap, record_idx=i))
    return dict(_scope_='mmrazor', type='SingleTeacherDistill', architecture=student,
                teacher=teacher, teacher_ckpt=ckpt,
                distiller=dict(type='ConfigurableDistiller', student_recorders=recorders,
                               teacher_recorders=copy.deepcopy(recorders),
                               distill_losses=losses, loss_forward_mappings=mappings))


def mmdet_ld_config(cfg, ckpt: str) -> dict:
    student = copy.deepcopy(dict(cfg.model.architecture))
    student.update(type='KnowledgeDistillationSingleStageDetector', teacher_config=TEACHER,
                   teacher_ckpt=ckpt, _scope_='mmdet')
    student['bbox_head'] = dict(student['bbox_head'], type='LDHead',
                                loss_ld=dict(type='KnowledgeDistillationKLDivLoss',
                                             loss_weight=0.25, T=10))
    return student


def build_variant(name: str, recipe: str, ckpt: str, batch: int, device: str, pair: Pair,
                  amp: bool = False):
    """(model, data, optimizer or None) of one variant, on ``device`` (``amp``: mmengine's
    ``AmpOptimWrapper``, float16 autocast and a dynamic loss scale, as ``--amp`` of mmdet's
    train tool)."""
    from mmengine.dataset import pseudo_collate
    from mmengine.optim import build_optim_wrapper

    cached = name.startswith('cached:')
    if name.startswith(('graph:', 'cached:')):
        name, recipe = 'graph', name.split(':', 1)[1]
    cfg = build_distill_config(pair.student, recipe, pair.teacher, ckpt, pair.options)
    if name in ('student', 'teacher', 'cross_bound'):
        plain = load_config(pair.student if name == 'student' else pair.teacher, pair.options)
        model, dataset, optim = build_train_parts(plain, batch)
        if name != 'student':
            from distill.checkpoint import load_weights_strict
            load_weights_strict(model, ckpt, role='teacher')
            model.eval()
            optim = None
    else:
        if name == 'mmrazor':
            cfg.model = razor_config(cfg, ckpt)
        elif name == 'mmdet_ld':
            cfg.model = mmdet_ld_config(cfg, ckpt)
        model, dataset, optim = build_train_parts(cfg, batch)
    model.to(device)
    if optim is not None:  # rebuilt after .to(device) so that its state lives there too
        wrapper = dict(cfg.optim_wrapper, type='AmpOptimWrapper', loss_scale='dynamic') if amp \
            else cfg.optim_wrapper
        optim = build_optim_wrapper(model, wrapper)
    if cached:  # the cache keys each image by the dataset and pipeline it came from
        from distill.config_files import base_dataset_cfg
        from distill.graph.cache_key import tag_sources
        tag_sources(base_dataset_cfg(cfg.train_dataloader.dataset), dataset)
    data = model.data_preprocessor(pseudo_collate([dataset[i] for i in range(batch)]), True)
    if name == 'cross_bound':
        return CrossBound(model, data), data, None
    if cached:  # memory only; filled by the warm-up steps
        from distill.graph import TeacherCache
        model.teacher_cache = TeacherCache('benchmark', dict(model.teacher_taps), None,
                                           num_images=batch)
    return model, data, optim


class CrossBound:
    """CrossKD's irreducible work in a step, for a lower bound of its ratio: the teacher
    head's last tower conv of both towers and its predictors (and scales), forward and the
    gradient to their input only (the teacher is frozen), on features of the cross path's
    shapes (the teacher's width at every FPN level), and nothing else: no adapter,
    re-standardisation, tap or loss. Any implementation of the method does at least this
    (GFL heads, ``layer=-1``)."""

    def __init__(self, teacher, data):
        self.head = teacher.requires_grad_(False).bbox_head  # frozen: input gradients only
        with torch.no_grad():
            feats = teacher.extract_feat(data['inputs'])
        self.feeds = [torch.randn(f.shape[0], self.head.feat_channels, *f.shape[2:],
                                  device=f.device) for f in feats]

    def __call__(self, device: str) -> float:
        head = self.head
        xs = self.inputs = [(f.clone().requires_grad_(), f.clone().requires_grad_())
                            for f in self.feeds]
        _sync(device)
        t = time.perf_counter()
        total = 0
        for level, (xc, xr) in enumerate(xs):
            cls = head.gfl_cls(head.cls_convs[-1](xc))
            reg = head.scales[level](head.gfl_reg(head.reg_convs[-1](xr))).float()
            total = total + cls.sum() + reg.sum()
        total.backward()
        _sync(device)
        return time.perf_counter() - t


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def time_variant(name: str, model, data, optim, device: str, amp: bool = False) -> float:
    if isinstance(model, CrossBound):
        return model(device)
    if optim is not None:
        # outside the timed step: mmengine's loops call train() once per epoch, not per
        # iteration (and the graph's also walks the teacher's modules to keep it in eval)
        model.train()
    _sync(device)
    t = time.perf_counter()
    if optim is None:
        with torch.no_grad(), torch.autocast(torch.device(device).type, enabled=amp):
            model.bbox_head(model.extract_feat(data['inputs']))
    else:
        with optim.optim_context(model):  # autocast under AmpOptimWrapper
            loss, _ = model.parse_losses(model(**data, mode='loss'))
        optim.update_params(loss)
    _sync(device)
    return time.perf_counter() - t


def _status_mib(field: str) -> float:
    """A ``/proc/self/status`` field (``VmRSS``, ``VmHWM``) in MiB."""
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def memory_only(name: str, recipe: str, ckpt: str, batch: int, device: str, steps: int,
                pair: Pair, amp: bool = False):
    """Run one variant alone; print its memory (MiB) as JSON.

    CUDA: peak allocated memory of the steps. CPU: the process's peak RSS, which the imports
    dominate, and the steps' own peak above the RSS once the models are built (the kernel's
    high-water mark is reset through ``/proc/self/clear_refs`` before the steps).
    """
    model, data, optim = build_variant(name, recipe, ckpt, batch, device, pair, amp)
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2 ** 20
    else:
        before = _status_mib('VmRSS')
        Path('/proc/self/clear_refs').write_text('5')  # resets VmHWM to the current RSS
    for _ in range(steps):
        time_variant(name, model, data, optim, device, amp)
    if device.startswith('cuda'):
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        step_peak = _status_mib('VmHWM')
    print(json.dumps({'variant': name, 'peak_mib': peak, 'before_steps_mib': before,
                      'steps_peak_mib': peak if device.startswith('cuda') else step_peak}))


def _label(v: str) -> str:
    if v.startswith('cached:'):
        return f'DistillGraph ({v[7:]}, warm teacher cache)'
    return {'cross_bound': 'CrossKD lower bound (floor + the cross convs and predictors alone)',
            'mmrazor': 'mmrazor SingleTeacherDistill',
            'mmdet_ld': 'mmdet 3.3 LD (Main LD only)', 'student': 'student step',
            'teacher': 'teacher no-grad forward'}.get(v, f'DistillGraph ({v[6:]})')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--pair', choices=['tiny', 'coco'], default='tiny',
                        help='the tiny GFL pair (default) or the COCO GFL R101 -> R50')
    parser.add_argument('--rounds', type=int, default=16)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--recipe', nargs='+', default=['kd_ld_vlr'],
                        help='one graph variant per recipe (e.g. kd_ld_vlr crosskd pkd)')
    parser.add_argument('--cache', action='store_true',
                        help='add a cached:<recipe> variant per recipe (warm teacher cache)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--amp', action='store_true',
                        help='float16 autocast and a dynamic loss scale (CUDA only)')
    parser.add_argument('--cross-bound', action='store_true',
                        help="add CrossKD's lower bound: the floor plus only the teacher's "
                             'last tower convs and predictors, forward and input gradient, '
                             "on the cross path's shapes (GFL pairs)")
    parser.add_argument('--no-memory', action='store_true')
    parser.add_argument('--memory-only', help=argparse.SUPPRESS)
    parser.add_argument('--teacher-ckpt', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.amp and not args.device.startswith('cuda'):
        parser.error('--amp needs --device cuda (mmengine\'s AmpOptimWrapper)')

    with tempfile.TemporaryDirectory() as tmp:
        pair = make_pair(args.pair, Path(tmp))
        ckpt = args.teacher_ckpt or teacher_checkpoint(Path(tmp) / 'teacher.pth', pair)
        graphs = tuple(f'graph:{r}' for r in args.recipe)
        graphs += tuple(f'cached:{r}' for r in args.recipe) if args.cache else ()
        # mmrazor's and mmdet's detectors are built from the tiny configs' paths
        variants = BASELINES + graphs + (OTHERS if args.pair == 'tiny' else ())
        variants += ('cross_bound',) if args.cross_bound else ()
        if args.memory_only:
            return memory_only(args.memory_only, args.recipe[0], ckpt, args.batch,
                               args.device, 5, pair, args.amp)
        runs = {v: build_variant(v, args.recipe[0], ckpt, args.batch, args.device, pair,
                                 args.amp) for v in variants}
        for v, run in runs.items():  # warm-up: allocator, first-call overheads, caches
            for _ in range(2):
                time_variant(v, *run, args.device, args.amp)
        times = {v: [] for v in variants}
        for r in range(args.rounds):
            for v, run in runs.items():
                times[v].append(time_variant(v, *run, args.device, args.amp))
            print(f'round {r + 1}/{args.rounds}', file=sys.stderr, flush=True)
        memory = {}
        if not args.no_memory:
            for v in ('student',) + graphs:
                out = subprocess.run(
                    [sys.executable, __file__, '--memory-only', v, '--teacher-ckpt', ckpt,
                     '--batch', str(args.batch), '--device', args.device, '--pair', args.pair]
                    + ['--amp'] * args.amp,
                    capture_output=True, text=True, check=True).stdout
                memory[v] = json.loads(out.strip().splitlines()[-1])

    floor = [s + t for s, t in zip(times['student'], times['teacher'])]
    print(f'{pair.title}, batch {args.batch}, {args.device}{", AMP" * args.amp}, '
          f'{torch.get_num_threads()} threads, '
          f'{args.rounds} interleaved rounds (medians)')
    print('| variant | step (s) | step / (student step + teacher forward) | '
          'step / student step |')
    print('|---|---|---|---|')
    for v in variants:
        med = statistics.median(times[v])
        if v == 'cross_bound':  # added to the floor: what CrossKD costs at the least
            print(f'| {_label(v)} | {med:.4f} (cross part) | '
                  f'{statistics.median([(a + f) / f for a, f in zip(times[v], floor)]):.3f} '
                  f'| |')
            continue
        ratio = ('' if v in BASELINES else
                 f'{statistics.median([a / f for a, f in zip(times[v], floor)]):.3f}')
        per_student = [a / s for a, s in zip(times[v], times['student'])]
        alone = '' if v in BASELINES else f'{statistics.median(per_student):.3f}'
        print(f'| {_label(v)} | {med:.4f} | {ratio} | {alone} |')
    print(f'| floor (student + teacher) | {statistics.median(floor):.4f} | 1.000 | |')
    m = memory.get('student')
    for v in graphs if memory else ():
        g, name = memory[v], _label(v)
        if args.device.startswith('cuda'):
            print(f'memory (peak allocated): student step {m["peak_mib"]:.0f} MiB, {name} '
                  f'{g["peak_mib"]:.0f} MiB (x{g["peak_mib"] / m["peak_mib"]:.2f})')
            continue
        grow = {k: x['steps_peak_mib'] - x['before_steps_mib'] for k, x in (('s', m), ('g', g))}
        print(f'memory (peak RSS of the process, imports included): student step '
              f'{m["peak_mib"]:.0f} MiB, {name} {g["peak_mib"]:.0f} MiB '
              f'(x{g["peak_mib"] / m["peak_mib"]:.2f}); RSS once built -> peak during 5 '
              f'steps: student {m["before_steps_mib"]:.0f} -> {m["steps_peak_mib"]:.0f} MiB '
              f'(+{grow["s"]:.0f}), {name} {g["before_steps_mib"]:.0f} -> '
              f'{g["steps_peak_mib"]:.0f} MiB (+{grow["g"]:.0f})')

if __name__ == '__main__':
    main()
