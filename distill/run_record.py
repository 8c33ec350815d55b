"""What defines a run, and the checks before a run starts or resumes.

mmengine's ``--resume`` continues from any checkpoint whatever config it is given: a run resumed
with another recipe, teacher, teacher checkpoint or student config silently becomes a mixture of
two runs (the old run's weights and optimizer state, the new run's losses). Every mmengine
checkpoint stores the config of its run as text (``meta['cfg']``), and distill runs also record
the sha256 of their teacher checkpoint (``distill.teacher_ckpt_sha256``), so resuming compares
the run definition of the checkpoint with the current one, field by field, and refuses a
mismatch unless ``--force-resume`` is given.
"""

from __future__ import annotations

import itertools
import json
import os
import os.path as osp

from distill.checkpoint import check_checkpoint, check_fits, state_dict_of
from distill.errors import CheckpointError, ResumeMismatchError, WorkDirError

_RUN_IDS = itertools.count()

#: Keys of a model config that do not change what is trained (not compared on resume).
_IGNORED = ('test_cfg', 'pair_names', 'teacher_ckpt', 'init_cfg')


def _plain(node):
    """A JSON-comparable copy of a config section (tuples become lists; ignored keys gone)."""
    node = json.loads(json.dumps(node, sort_keys=True, default=str))

    def strip(n):
        if isinstance(n, dict):
            return {k: strip(v) for k, v in n.items() if k not in _IGNORED}
        if isinstance(n, list):
            return [strip(v) for v in n]
        return n
    return strip(node)


def _flat(node, prefix=''):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flat(v, f'{prefix}.{k}' if prefix else k))
        return out or {prefix: {}}
    if isinstance(node, list):
        out = {}
        for i, v in enumerate(node):
            out.update(_flat(v, f'{prefix}.{i}'))
        return out or {prefix: []}
    return {prefix: node}


class TeacherCkpt(tuple):
    """``(path, sha256)`` of a teacher checkpoint; equal when the sha256s agree, or, for runs
    recorded before the sha256 was (None), when the absolute paths agree."""

    def __new__(cls, path, sha256):
        return super().__new__(cls, (path, sha256))

    def __eq__(self, other):
        if not isinstance(other, TeacherCkpt):
            return NotImplemented
        if self[1] and other[1]:
            return self[1] == other[1]
        return self[0] == other[0] or (bool(self[0]) and bool(other[0]) and
                                       osp.abspath(self[0]) == osp.abspath(other[0]))

    def __ne__(self, other):
        return not self == other

    __hash__ = tuple.__hash__


def _ckpt_name(path, sha256) -> str | None:
    if not path:
        return None
    return f'{path} (sha256 {sha256[:12]})' if sha256 else str(path)


#: Where each field of :func:`run_definition` lives in the config (names the differing keys).
_ROOTS = {'student config': 'model.architecture', 'teacher config': 'model.teacher',
          'recipe': 'model.edges', 'model config': 'model',
          'training data': 'train_dataloader.dataset'}


def run_definition(cfg) -> dict[str, tuple[object, str]]:
    """The fields that define a run: ``{field: (comparable value, how to name it)}``.

    A distill run is defined by its student model, teacher model, teacher checkpoint (its
    sha256), recipe (its edges) and training data; a plain run by its model and training data.
    """
    model = cfg.get('model') or {}
    record = cfg.get('distill') or {}
    data = (cfg.get('train_dataloader') or {}).get('dataset')
    if model.get('type') == 'DistillGraph':
        ckpt = record.get('teacher_ckpt')
        fields = {
            'student config': (_plain(model.get('architecture')), record.get('student')),
            'teacher config': (_plain(model.get('teacher')), record.get('teacher')),
            'teacher checkpoint': (TeacherCkpt(ckpt, record.get('teacher_ckpt_sha256')),
                                   _ckpt_name(ckpt, record.get('teacher_ckpt_sha256'))),
            'recipe': (_plain(model.get('edges') or []),
                       f'{record.get("recipe")} (edges '
                       f'{[e.get("name") for e in model.get("edges") or []]})'),
        }
    else:
        fields = {'model config': (_plain(model), f'{model.get("type")} model')}
    fields['training data'] = (_plain(data), 'train_dataloader.dataset')
    return fields


def compare_runs(old_cfg, new_cfg) -> list[str]:
    """One line per field whose value differs between two run configs."""
    old, new = run_definition(old_cfg), run_definition(new_cfg)
    lines = []
    for field in sorted(old.keys() | new.keys()):
        (a, a_name), (b, b_name) = old.get(field, (None, None)), new.get(field, (None, None))
        if a == b:
            continue
        if isinstance(a, (dict, list)) and isinstance(b, (dict, list)):
            root = _ROOTS.get(field, '')
            fa, fb = _flat(a, root), _flat(b, root)
            keys = sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))
            detail = ', '.join(f'{k}: {fa.get(k, "<unset>")!r} -> {fb.get(k, "<unset>")!r}'
                               for k in keys[:3]) + (f' (+{len(keys) - 3} more)'
                                                     if len(keys) > 3 else '')
        else:
            detail = f'{a!r} -> {b!r}'
        lines.append(f'{field}: {a_name} in the checkpoint vs {b_name} now ({detail})')
    return lines


def checkpoint_run_config(ckpt: dict, path: str, force: bool = False):
    """The run config stored in a checkpoint's ``meta['cfg']``.

    Returns None (with a warning) when the checkpoint has none, or when it cannot be parsed and
    ``force`` is set; without ``force`` an unparsable one is an error.
    """
    from mmengine.config import Config
    from mmengine.logging import print_log

    text = (ckpt.get('meta') or {}).get('cfg')
    if not text:
        print_log(f'--resume {path!r}: the checkpoint records no run config (meta.cfg): cannot '
                  f'check that it belongs to this run', logger='current', level=30)
        return None
    try:
        return Config.fromstring(text, file_format='.py')
    except Exception as e:  # noqa: BLE001
        if force:
            print_log(f'--force-resume: the run config stored in {path!r} cannot be parsed '
                      f'({type(e).__name__}); resuming unchecked', logger='current', level=30)
            return None
        raise CheckpointError(f'checkpoint {path!r}: its stored run config (meta.cfg) cannot be '
                              f'parsed ({type(e).__name__}: {str(e)[:200]}); resume with '
                              f'--force-resume only if you know it is this run') from e


def resume_checkpoint(cfg) -> str:
    """The checkpoint ``--resume`` continues from: the given one or the work dir's last."""
    if cfg.get('load_from'):
        return cfg.load_from
    pointer = osp.join(cfg.work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        raise WorkDirError(f'--resume: nothing to resume in work dir {cfg.work_dir!r} (no '
                           f'last_checkpoint file): drop --resume to start a new run, or give '
                           f'--resume CKPT')
    with open(pointer) as f:
        ckpt = f.read().strip()
    if not ckpt:
        raise WorkDirError(f'--resume: {pointer!r} is empty: give the checkpoint to resume '
                           f'from explicitly, --resume CKPT')
    if not osp.isfile(ckpt):
        raise WorkDirError(f'--resume: {pointer!r} points to {ckpt!r}, which does not exist '
                           f'(deleted or moved?): give an existing checkpoint with --resume CKPT')
    return ckpt


def check_before_run(cfg, force: bool = False) -> dict | None:
    """Check the checkpoint a run starts from, before anything is built (the work dir itself
    is checked and held before this, by :func:`distill.files.hold_work_dir`).

    With ``cfg.resume`` the checkpoint (given, or the work dir's last) must be a training
    checkpoint of the same run (:func:`run_definition`); ``cfg.load_from`` is then set to it, so
    mmengine resumes from the file that was checked. Without ``resume``, a ``load_from`` must
    exist and load. Whether its weights fit the model is checked once the model is built
    (:func:`checked_runner`, which takes the checkpoint returned here instead of reading the
    file again).

    Returns:
        dict | None: The loaded checkpoint to resume or load from (None: none, or a URL).

    Raises:
        WorkDirError: the work dir has nothing (valid) to resume.
        CheckpointError: the checkpoint is missing, corrupt or not a training checkpoint.
        ResumeMismatchError: the checkpoint's run differs (each field named), unless ``force``.
    """
    if not cfg.get('resume'):
        if cfg.get('load_from') and not str(cfg.load_from).startswith(('http://', 'https://')):
            return check_checkpoint(cfg.load_from)
        return None
    path = resume_checkpoint(cfg)
    ckpt = check_checkpoint(path)
    meta = ckpt.get('meta') or {}
    if 'epoch' not in meta or 'iter' not in meta or 'optimizer' not in ckpt:
        raise CheckpointError(f'--resume {path!r}: not a training checkpoint (no meta.epoch/'
                              f'meta.iter/optimizer state; e.g. an exported model): to start a '
                              f'new run from its weights use --cfg-options load_from={path}')
    old = checkpoint_run_config(ckpt, path, force)
    diffs = compare_runs(old, cfg) if old is not None else []
    if diffs:
        msg = (f'--resume {path!r}: the checkpoint belongs to another run: ' + '; '.join(diffs)
               + '. Resuming would mix two runs: start a new run in another --work-dir, or '
               'pass --force-resume to continue anyway')
        if not force:
            raise ResumeMismatchError(msg)
        from mmengine.logging import print_log
        print_log(f'--force-resume: {msg}', logger='current', level=30)
    cfg.load_from = path
    return ckpt


def checked_runner(cfg, loaded: dict | None = None):
    """``Runner.from_cfg(cfg)``, then check that the checkpoint to load fits its model.

    mmengine loads ``load_from`` (and resumes) non-strictly, only logging the keys it could not
    load; a checkpoint of another model would then train or evaluate random weights.

    Args:
        cfg (Config): The run's config.
        loaded (dict, optional): ``cfg.load_from`` already loaded (:func:`check_before_run`),
            so that the file is not read again.
    """
    from mmengine.runner import Runner

    # mmengine keeps one visualizer per name for the whole process: a second Runner in the same
    # process (tests, notebooks) with the configs' fixed name 'visualizer' would get the first
    # run's, and log its scalars into the first run's work dir. A name per run avoids that.
    if isinstance(cfg.get('visualizer'), dict):
        cfg.visualizer['name'] = f'visualizer_{os.getpid()}_{next(_RUN_IDS)}'
    runner = Runner.from_cfg(cfg)
    source = cfg.get('load_from')
    if source:
        from distill.checkpoint import load_state_dict_source
        if loaded is not None:
            state = state_dict_of(loaded)
        elif str(source).startswith(('http://', 'https://')):
            state = load_state_dict_source(source)
        else:
            state = state_dict_of(check_checkpoint(source))
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        check_fits(model.state_dict(), state, source, f'config {cfg.filename or "(built)"}')
    return runner
