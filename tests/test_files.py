"""Output paths checked before work, the work dir's hold, and every reader against arbitrary
bytes and text (distill/files.py and the readers of checkpoints, configs and annotations)."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest

from distill.checkpoint import CheckpointError, check_checkpoint
from distill.config_files import read_config
from distill.datasets.coco_json import load_coco_json
from distill.errors import ConfigError, DatasetError, WorkDirError
from distill.files import (
    LOCK_NAME,
    OutputPathError,
    UnreadableFileError,
    check_output_path,
    hold_work_dir,
    read_json,
    release_work_dir,
)
from tests.conftest import REPO

HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from distill.files import hold_work_dir
hold_work_dir({work_dir!r})
print('held', flush=True)
time.sleep(120)
"""


def _holder(work_dir):
    """A separate process that holds ``work_dir`` (it prints 'held' once it does)."""
    proc = subprocess.Popen([sys.executable, '-c', HOLDER.format(repo=str(REPO),
                                                                 work_dir=str(work_dir))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'held'
    return proc


# --- output paths ------------------------------------------------------------------------

def test_output_path_under_a_file_is_refused_naming_both(tmp_path):
    (tmp_path / 'afile').write_text('x')
    with pytest.raises(OutputPathError, match=r"work dir '.*afile/run/sub' cannot be created "
                                              r"as a directory: '.*afile' is a file"):
        check_output_path(str(tmp_path / 'afile' / 'run' / 'sub'), 'work dir')
    with pytest.raises(OutputPathError, match=r"export destination '.*afile/student.pth' "
                                              r"cannot be created as a file"):
        check_output_path(str(tmp_path / 'afile' / 'student.pth'), 'export destination',
                          directory=False)


def test_output_path_of_the_wrong_kind_is_refused(tmp_path):
    (tmp_path / 'afile').write_text('x')
    (tmp_path / 'adir').mkdir()
    with pytest.raises(OutputPathError, match='exists and is a file, not a directory'):
        check_output_path(str(tmp_path / 'afile'), 'work dir')
    with pytest.raises(OutputPathError, match="--out '.*adir' is a directory"):
        check_output_path(str(tmp_path / 'adir'), '--out', directory=False)
    # what can be written passes: new nested folders, an existing folder, a file to replace
    check_output_path(str(tmp_path / 'new' / 'deeper'), 'work dir')
    check_output_path(str(tmp_path / 'adir'), 'work dir')
    check_output_path(str(tmp_path / 'afile'), '--out', directory=False)
    assert not (tmp_path / 'new').exists()  # checking creates nothing


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_output_path_without_write_permission_is_refused(tmp_path):
    locked = tmp_path / 'ro'
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputPathError, match='no write permission'):
            check_output_path(str(locked / 'run'), 'work dir')
    finally:
        locked.chmod(0o700)


def test_export_to_a_path_under_a_file_is_one_line_before_any_work(tmp_path):
    (tmp_path / 'afile').write_text('x')
    proc = subprocess.run([sys.executable, str(REPO / 'tools/export_student.py'),
                           'no_such_run.py', 'no_such.pth', str(tmp_path / 'afile' / 'student')],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    # the destination is checked first: the missing config and checkpoint are not reached
    assert last.startswith("error: export destination '") and 'is a file' in last, proc.stderr
    assert 'Traceback' not in proc.stderr


# --- the work dir's hold -----------------------------------------------------------------

def test_a_second_run_in_a_held_work_dir_is_refused_naming_the_holder(tmp_path):
    work = tmp_path / 'run'
    proc = _holder(work)
    try:
        with pytest.raises(WorkDirError) as err:
            hold_work_dir(str(work))
        msg = str(err.value)
        assert f'is in use by another run: pid {proc.pid} on host {socket.gethostname()}' in msg
        assert 'give another --work-dir' in msg and LOCK_NAME in msg
    finally:
        proc.kill()
        proc.wait()


def test_the_hold_of_a_killed_run_is_taken_over_with_a_warning(tmp_path):
    work = tmp_path / 'run'
    proc = _holder(work)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with pytest.warns(UserWarning, match=rf'taking over the hold of a run that did not end '
                                         rf'cleanly \(pid {proc.pid} on host'):
        hold_work_dir(str(work))
    try:
        record = json.loads((work / LOCK_NAME).read_text())
        assert record['pid'] == os.getpid()
    finally:
        release_work_dir(str(work))
    assert (work / LOCK_NAME).read_text() == ''  # released cleanly: the next run is silent
    hold_work_dir(str(work))
    release_work_dir(str(work))


def test_train_refuses_a_held_work_dir_before_building_anything(tmp_path):
    work = tmp_path / 'run'
    proc = _holder(work)
    try:
        t0 = time.time()
        out = subprocess.run([sys.executable, str(REPO / 'tools/train.py'),
                              str(REPO / 'configs/tiny/gfl_s_digits.py'), '--work-dir',
                              str(work)], capture_output=True, text=True, timeout=300)
    finally:
        proc.kill()
        proc.wait()
    assert out.returncode == 2, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: work dir '{work}' is in use by another run: pid {proc.pid}")
    assert sorted(os.listdir(work)) == [LOCK_NAME]  # nothing written: no log, no timestamp dir
    assert time.time() - t0 < 120


# --- readers against arbitrary bytes and text --------------------------------------------

rng = random.Random(0)
PAYLOADS = {
    'plain text': b'hello\n',  # torch's weights-only unpickler: KeyError 101
    'other text': b'example text\n',  # IndexError
    'random bytes': bytes(rng.randrange(256) for _ in range(4096)),
    'not utf-8': b'\x80\x81\xfe\xff' * 8,
    'zip header': b'PK\x03\x04' + bytes(60),
    'pickle header': b'\x80\x02}q\x00(X\x01\x00\x00\x00a',
    'deep nesting': b'[' * 100000,
    'json list': b'[1, 2, 3]',
    'python syntax error': b'model = dict(type=\n',
}


@pytest.mark.parametrize('name', sorted(PAYLOADS))
def test_every_reader_names_the_file_it_cannot_read(name, tmp_path):
    payload = PAYLOADS[name]
    for suffix, reader, error in (('.pth', check_checkpoint, CheckpointError),
                                  ('.py', read_config, ConfigError),
                                  ('.json', load_coco_json, DatasetError),
                                  ('.metrics.json', lambda p: read_json(p, 'run metrics'),
                                   UnreadableFileError)):
        path = tmp_path / f'input{suffix}'
        path.write_bytes(payload)
        if suffix == '.metrics.json':
            try:  # valid JSON is read back as it is; anything else is the one-line error
                json.loads(payload)
                continue
            except (ValueError, RecursionError):
                pass
        with pytest.raises(error) as err:
            reader(str(path))
        assert str(path) in str(err.value), (name, suffix, err.value)


def test_test_py_with_a_text_file_as_checkpoint_is_one_line(tmp_path):
    """The issue's case: a one-line text file given as checkpoint to tools/test.py."""
    text = tmp_path / 'text.pth'
    text.write_text('hello\n')
    proc = subprocess.run([sys.executable, str(REPO / 'tools/test.py'),
                           str(REPO / 'configs/tiny/gfl_s_digits.py'), str(text)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: checkpoint '{text}' cannot be loaded (KeyError"), proc.stderr
    assert 'Traceback' not in proc.stderr


# --- the hold under each launcher --------------------------------------------------------

LAUNCH = """
import sys, time
sys.path.insert(0, {repo!r})
from mmengine.config import Config
from distill.cli.train import apply_run_options, parse_args
cfg = Config(dict(work_dir={work_dir!r}, model=dict(type='GFL')))
args = parse_args(['x.py', '--launcher', {launcher!r}])
apply_run_options(cfg, args)  # what train.py and train_distill.py run before the Runner
print('ok', flush=True)
time.sleep(float(sys.argv[1]))
"""

# the variables each launcher gives its processes before mmengine's init_dist sets RANK
LAUNCH_ENV = {'pytorch': lambda r: dict(RANK=str(r), WORLD_SIZE='2', LOCAL_RANK=str(r)),
              'slurm': lambda r: dict(SLURM_PROCID=str(r), SLURM_NTASKS='2',
                                      SLURM_LOCALID=str(r)),
              'mpi': lambda r: dict(OMPI_COMM_WORLD_RANK=str(r), OMPI_COMM_WORLD_SIZE='2',
                                    OMPI_COMM_WORLD_LOCAL_RANK=str(r))}


@pytest.mark.parametrize('launcher', ['pytorch', 'slurm', 'mpi'])
def test_a_two_process_launch_holds_the_work_dir_once(tmp_path, launcher):
    """Both processes of a launch pass the hold at the same time; the record is rank 0's.
    (With the rank read from RANK alone, the slurm and mpi ranks 1 were refused as 'in use by
    another run'.)"""
    work = tmp_path / 'run'
    base = {k: v for k, v in os.environ.items()
            if k not in ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK', 'PMI_RANK')}
    code = LAUNCH.format(repo=str(REPO), work_dir=str(work), launcher=launcher)
    procs = [subprocess.Popen([sys.executable, '-c', code, str(30 if r == 0 else 0)],
                              env=dict(base, **LAUNCH_ENV[launcher](r)), cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    try:
        assert procs[0].stdout.readline().strip() == 'ok', procs[0].stderr.read()[-2000:]
        out, err = procs[1].communicate(timeout=120)  # rank 1 while rank 0 holds
        assert procs[1].returncode == 0 and out.strip() == 'ok', err[-2000:]
        assert json.loads((work / LOCK_NAME).read_text())['pid'] == procs[0].pid
    finally:
        procs[0].kill()
        procs[0].wait()


def test_launcher_rank_reads_each_launchers_variable(monkeypatch):
    from distill.files import launcher_rank
    for name in ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK', 'PMI_RANK'):
        monkeypatch.delenv(name, raising=False)
    assert launcher_rank('slurm') == 0 and launcher_rank(None) == 0
    monkeypatch.setenv('SLURM_PROCID', '3')
    assert launcher_rank('slurm') == 3 and launcher_rank('pytorch') == 0
    assert launcher_rank('none') == 0 and launcher_rank(None) == 3
    monkeypatch.setenv('PMI_RANK', '2')
    assert launcher_rank('mpi') == 2
    monkeypatch.setenv('OMPI_COMM_WORLD_RANK', 'x')
    with pytest.raises(WorkDirError, match="launcher mpi: environment variable "
                                           "OMPI_COMM_WORLD_RANK='x' is not a rank"):
        launcher_rank('mpi')


def test_a_lock_file_of_another_user_is_a_one_line_error(tmp_path, monkeypatch):
    work = tmp_path / 'run'
    work.mkdir()
    (work / LOCK_NAME).write_text('')
    real_open = os.open

    def refuse(path, *args, **kwargs):  # what a non-root user meets (root bypasses modes)
        if str(path).endswith(LOCK_NAME):
            raise PermissionError(13, 'Permission denied', str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, 'open', refuse)
    with pytest.raises(WorkDirError, match=r"work dir '.*run': its lock file .*\.distill\.lock "
                                           r"cannot be opened for writing \(owned by (user "
                                           r"\S+ \(uid \d+\)|uid \d+); a run of another user"):
        hold_work_dir(str(work))


def test_a_run_caught_between_its_lock_and_its_record_is_named(tmp_path):
    import fcntl
    work = tmp_path / 'run'
    work.mkdir()
    fd = os.open(work / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # locked, nothing written yet
    try:
        with pytest.raises(WorkDirError) as err:
            hold_work_dir(str(work))
        msg = str(err.value)
        assert 'in use by another run: a run that has just started (its record is not ' \
               'written yet)' in msg
        assert 'pid None' not in msg and '1970' not in msg
    finally:
        os.close(fd)
