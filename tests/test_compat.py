"""Each fix in distill.compat is needed (shown without it) and works (shown with it)."""

import os
import pickle
import subprocess
import sys

import pytest
import torch
from mmengine.fileio.backends.local_backend import LocalBackend
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint

import distill  # noqa: F401  (applies compat)
from distill import compat


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300)


def test_mmrazor_import_fails_without_standin_and_works_with_it():
    bare = _run_python('import mmrazor.models')
    assert bare.returncode != 0
    assert 'Error' in bare.stderr  # torch private API gone (AttributeError/ImportError)

    fixed = _run_python(
        'import distill\n'
        'from mmrazor.models import SingleTeacherDistill, ConfigurableDistiller\n'
        'from mmrazor.models.task_modules import ModuleOutputsRecorder\n'
        'import mmrazor.engine\n'
        'import sys\n'
        "m = sys.modules['mmrazor.structures.quantization']\n"
        "print(type(m).__name__, m.__doc__.split(':')[0])\n")
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert 'distill.compat stand-in' in fixed.stdout


def test_quantization_placeholders_refuse_use():
    module = sys.modules[compat.QUANT_MODULE]
    with pytest.raises(RuntimeError, match='quantization is not available'):
        module.QConfigHandler()


class _ToyModel(BaseModel):
    """A real mmengine model (one linear layer) so the Runner writes a real checkpoint."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs)
        out = self.linear(x)
        if mode == 'loss':
            return dict(loss=((out - x.sum(1, keepdim=True)) ** 2).mean())
        return out


def _toy_runner(work_dir, max_iters, resume=False):
    data = [dict(inputs=torch.tensor([float(i), float(-i) / 2])) for i in range(8)]
    return Runner(
        model=_ToyModel(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=data, sampler=dict(type='DefaultSampler', shuffle=True),
                              batch_size=2, collate_fn=dict(type='pseudo_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        resume=resume, randomness=dict(seed=0), default_scope='mmengine',
        experiment_name=f'toy_{max_iters}_{int(resume)}')


class _WithoutOurAllowlist:
    """Temporarily remove distill's allowlisted types (torch's own defaults stay)."""

    def __enter__(self):
        self.saved = torch.serialization.get_safe_globals()
        ours = compat.checkpoint_safe_globals()
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals([g for g in self.saved if g not in ours])

    def __exit__(self, *exc):
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(self.saved)


def test_runner_checkpoint_needs_allowlist_and_resumes(tmp_path):
    _toy_runner(tmp_path, max_iters=2).train()
    ckpt = tmp_path / 'iter_2.pth'

    # Needed: with only torch's defaults, the message_hub's types are refused.
    with _WithoutOurAllowlist():
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt)))
        with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
            torch.load(ckpt, weights_only=True)
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in unsafe  # message_hub state
    assert {'numpy.ndarray', 'numpy._core.multiarray._reconstruct'} <= unsafe
    # With them, nothing unsafe is left: in particular no builtins.getattr (see next test).
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt)) == []

    # Works: default torch.load (weights_only=True) reads it, and the Runner resumes at iter 2.
    loaded = torch.load(ckpt)
    assert loaded['meta']['iter'] == 2
    runner = _toy_runner(tmp_path, max_iters=4, resume=True)
    runner.train()
    assert runner.iter == 4
    assert torch.load(tmp_path / 'iter_4.pth')['meta']['iter'] == 4
    hub = torch.load(tmp_path / 'iter_4.pth')['message_hub']
    assert hub['log_scalars']['train/loss']._count_history.sum() == 4  # 2 saved + 2 resumed


def test_history_buffer_pickles_method_names_not_functions():
    from mmengine.logging import HistoryBuffer
    buf = HistoryBuffer([1.0, 3.0], [1, 1])
    # Needed: mmengine's own state holds the statistics functions (pickled via getattr).
    original_state = HistoryBuffer.__getstate__.original(buf)
    assert callable(original_state['statistics_methods']['mean'])
    # Works: only names are stored, and a round trip keeps data and methods.
    state = buf.__getstate__()
    assert 'statistics_methods' not in state
    assert state['statistics_method_names'] == ['current', 'max', 'mean', 'min']
    copy = pickle.loads(pickle.dumps(buf))
    assert copy.statistics('mean') == 2.0 and copy.max() == 3.0
    assert b'getattr' not in pickle.dumps(buf, protocol=2)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def test_code_executing_pickle_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    exploit = _Exploit()
    exploit.marker = marker
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'meta': exploit}, path)
    with pytest.raises(pickle.UnpicklingError, match='unsupported GLOBAL posix.system'):
        load_checkpoint(torch.nn.Linear(1, 1), str(path), map_location='cpu')
    assert not marker.exists()


def test_local_backend_writes_are_atomic(tmp_path, monkeypatch):
    target = tmp_path / 'last_checkpoint'
    target.write_text('epoch_1.pth')

    backend = LocalBackend()
    # Needed: mmengine's own put() truncates the destination before writing, so a failure while
    # writing (here a TypeError from write) loses the previous content.
    with pytest.raises(TypeError):
        LocalBackend.put.original(backend, 'not bytes', target)
    assert target.read_text() == ''

    # Works: the patched put keeps the old file when the write fails, and leaves no temp file.
    target.write_text('epoch_1.pth')
    def broken_fsync(fd):
        raise OSError('disk full')
    monkeypatch.setattr(os, 'fsync', broken_fsync)
    with pytest.raises(OSError, match='disk full'):
        backend.put(b'epoch_2.pth', target)
    assert target.read_text() == 'epoch_1.pth'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['last_checkpoint']
    monkeypatch.undo()
    backend.put_text('epoch_2.pth', target)
    assert target.read_text() == 'epoch_2.pth'


@pytest.mark.skipif(torch.cuda.is_available(), reason='the fix concerns machines without CUDA')
def test_distributed_launch_on_cpu(tmp_path, monkeypatch, repo):
    from mmengine.dist import utils as dist_utils

    # Needed: mmengine's own initialiser calls torch.cuda.set_device, absent from CPU builds.
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('LOCAL_RANK', '0')
    with pytest.raises((AttributeError, RuntimeError, AssertionError)):
        dist_utils._init_dist_pytorch.original('gloo')

    # Works: two gloo processes train one epoch together.
    work = tmp_path / 'ddp'
    opts = ['train_dataloader.dataset.indices=8', 'train_dataloader.batch_size=2',
            'train_cfg.max_epochs=1', 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False', 'train_cfg.val_interval=100',
            'default_hooks.checkpoint.save_best=None', 'default_hooks.logger.interval=1']
    env = dict(os.environ, PORT='29531', OMP_NUM_THREADS='1',
               PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
    proc = subprocess.run(
        ['bash', str(repo / 'tools' / 'dist_train.sh'), 'configs/tiny/gfl_s_digits.py', '2',
         '--work-dir', str(work), '--cfg-options', *opts],
        cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(work / 'epoch_1.pth')
    assert ckpt['meta']['iter'] == 2  # 8 images / (2 ranks x batch 2); one process would do 4
    log = next(work.glob('*/*.log')).read_text()
    assert 'Distributed training: True' in log and "dist_cfg=dict(backend='gloo')" in log


def test_recursion_limit_is_put_back_after_mmrazor_raised_it():
    deep_json = "import json\ntry:\n    json.loads(b'[' * 100000)\nexcept RecursionError:\n" \
                "    print('RecursionError')\n"
    # needed: mmrazor's tracer raises the limit to 2**20, and deep JSON then kills the process
    # (compat loaded from its file: `import distill` would already put the limit back)
    bare = _run_python('import importlib.util, sys\n'
                       f'spec = importlib.util.spec_from_file_location("c", {compat.__file__!r})\n'
                       'compat = importlib.util.module_from_spec(spec)\n'
                       'spec.loader.exec_module(compat)\ncompat.apply()\n'
                       'import mmrazor.models.task_modules.tracer.fx_tracer\n'
                       'print(sys.getrecursionlimit())\n' + deep_json)
    assert bare.stdout.splitlines()[0] == str(2 ** 20)
    assert bare.returncode < 0 and 'RecursionError' not in bare.stdout  # killed by a signal
    # works: after `import distill` the limit is Python's again and the error is an exception
    fixed = _run_python('import sys\nlimit = sys.getrecursionlimit()\nimport distill\n'
                        'import mmrazor.models\nprint(sys.getrecursionlimit() == limit)\n'
                        + deep_json)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert fixed.stdout.split() == ['True', 'RecursionError']
