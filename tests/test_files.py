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
from distill.cli.common import read_config
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
