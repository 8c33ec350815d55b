"""What the tools write and read, checked before any work: output paths, the work dir's hold,
and JSON files read back.

* :func:`check_output_path`: a path a tool will write (a work dir, ``--out``, an export
  destination, a plot) can be created and written; else one line naming the path and why,
  before anything is trained or evaluated.
* :func:`hold_work_dir`: a run holds its work dir for as long as it runs (an exclusive
  ``flock`` on ``<work dir>/.distill.lock``, which records the holder's pid, host, start and
  command). A second run there is refused, naming the holder; the operating system drops the
  lock of a killed run, and the next run takes it over with a warning naming the run that did
  not end cleanly. Under ``torch.distributed`` only rank 0 holds it.
* :func:`read_json`: a JSON file the tools read back (metrics, manifests), or one line
  naming it.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import os.path as osp
import socket
import sys
import time
import warnings

from distill.errors import DistillError, WorkDirError

LOCK_NAME = '.distill.lock'
_HELD: dict[str, int] = {}  # real path of a held work dir -> the lock file's descriptor


class OutputPathError(WorkDirError):
    """A path a tool would write (a work dir, an output file) cannot be created or written."""


class UnreadableFileError(DistillError, ValueError):
    """A file a tool reads cannot be read or parsed."""


def check_output_path(path: str, what: str, directory: bool = True) -> None:
    """Check that ``path`` can be created (or already is) and written.

    Args:
        path (str): The directory (``directory=True``) or file a tool will write.
        what (str): What it is, for the message (``'work dir'``, ``'--out'``, ...).
        directory (bool): A directory, or a file.

    Raises:
        OutputPathError: naming ``path`` and why (a file in the way, a directory where a file
            goes, a read-only or unwritable folder).
    """
    full = osp.abspath(path)
    kind = 'a directory' if directory else 'a file'
    if osp.exists(full):
        if directory and not osp.isdir(full):
            raise OutputPathError(f'{what} {path!r} exists and is a file, not a directory: '
                                  f'remove it or give another path')
        if not directory and osp.isdir(full):
            raise OutputPathError(f'{what} {path!r} is a directory: give a file path')
        folder = full if directory else osp.dirname(full)
    else:
        folder = osp.dirname(full)
        while not osp.exists(folder):
            folder = osp.dirname(folder)
        if not osp.isdir(folder):
            raise OutputPathError(f'{what} {path!r} cannot be created as {kind}: {folder!r} '
                                  f'is a file, not a directory')
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f'{what} {path!r} cannot be written: no write permission in '
                              f'{folder!r}')


#: Where each mmengine launcher's processes find their global rank before the process group
#: exists (mmengine's ``init_dist`` sets ``RANK`` from these only when the Runner is built,
#: after the work dir is held): torchrun's ``RANK``, Slurm's ``SLURM_PROCID``, Open MPI's
#: ``OMPI_COMM_WORLD_RANK`` (MPICH / Intel MPI: ``PMI_RANK``).
LAUNCHER_RANK_VARS = {'pytorch': ('RANK',), 'slurm': ('SLURM_PROCID',),
                      'mpi': ('OMPI_COMM_WORLD_RANK', 'PMI_RANK')}


def launcher_rank(launcher: str | None = None) -> int:
    """This process's global rank under ``launcher`` (``'none'``, ``'pytorch'``, ``'slurm'``,
    ``'mpi'``; None: whichever of their variables is set), 0 for a single process.

    Read from the process group when it exists, else from the launcher's own variables
    (:data:`LAUNCHER_RANK_VARS`), so that exactly one process of a launch holds the work dir
    whatever the launcher.
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    if launcher == 'none':
        return 0
    names = (LAUNCHER_RANK_VARS.get(launcher, ()) if launcher else
             tuple(v for vs in LAUNCHER_RANK_VARS.values() for v in vs))
    for name in names:
        value = os.environ.get(name)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                raise WorkDirError(f'launcher {launcher or "(any)"}: environment variable '
                                   f'{name}={value!r} is not a rank (an integer)') from None
    return 0


def _holder(fd: int) -> dict:
    """The holder a lock file records ({} when empty: released cleanly)."""
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:
        return {'unreadable': raw[:80].decode('utf-8', 'replace')}


def _owner(path: str) -> str:
    """``user NAME (uid N)`` of a file, or ``an unknown user``."""
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return 'an unknown user'
    try:
        import pwd
        return f'user {pwd.getpwuid(uid).pw_name} (uid {uid})'
    except (ImportError, KeyError):
        return f'uid {uid}'


def describe(holder: dict) -> str:
    """``pid P on host H, started T (command)`` of a lock file's record."""
    if not holder:
        # locked, record not yet written: the holder is between its flock and its record
        return 'a run that has just started (its record is not written yet)'
    if 'unreadable' in holder:
        return f'an unreadable record {holder["unreadable"]!r}'
    started = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('started', 0)))
    return (f'pid {holder.get("pid")} on host {holder.get("host")}, started {started} '
            f'({holder.get("command", "?")})')


def _alive_here(holder: dict) -> bool:
    """Whether the recorded holder is a live process of this host."""
    if holder.get('host') != socket.gethostname() or not isinstance(holder.get('pid'), int):
        return False
    try:
        os.kill(holder['pid'], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _in_use(work_dir: str, holder: dict, lock: str) -> WorkDirError:
    return WorkDirError(f'work dir {work_dir!r} is in use by another run: {describe(holder)}; '
                        f'wait for it to end (or stop it), or give another --work-dir (lock '
                        f'file {lock})')


def hold_work_dir(work_dir: str, launcher: str | None = None) -> None:
    """Hold ``work_dir`` for this process (created if missing); released at exit or by
    :func:`release_work_dir`. A second call for the same directory in this process is a no-op.
    Under a launcher only the process of global rank 0 holds it (:func:`launcher_rank`).

    Raises:
        OutputPathError: the work dir cannot be created or written.
        WorkDirError: another run holds it (named, with what to do), or its lock file cannot
            be opened (another user's).
    """
    if launcher_rank(launcher) != 0:
        return
    check_output_path(work_dir, 'work dir')
    key = osp.realpath(work_dir)
    if key in _HELD:
        return
    os.makedirs(work_dir, exist_ok=True)
    lock = osp.join(work_dir, LOCK_NAME)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:
        owner = _owner(lock)
        raise WorkDirError(f'work dir {work_dir!r}: its lock file {lock} cannot be opened for '
                           f'writing (owned by {owner}; a run of another user?): give another '
                           f'--work-dir, or remove the file if no run uses it') from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        locked = True
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise _in_use(work_dir, holder, lock) from None
    except OSError as e:  # a filesystem without flock: fall back on the recorded pid
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            os.close(fd)
            raise
        locked = False
    previous = _holder(fd)
    if previous and previous.get('pid') != os.getpid():
        if not locked and _alive_here(previous):
            os.close(fd)
            raise _in_use(work_dir, previous, lock)
        warnings.warn(f'work dir {work_dir!r}: taking over the hold of a run that did not end '
                      f'cleanly ({describe(previous)}; killed?); its files are kept, '
                      f'--resume continues from its last checkpoint', stacklevel=2)
    record = dict(pid=os.getpid(), host=socket.gethostname(), started=time.time(),
                  command=' '.join([osp.basename(sys.argv[0] or 'python'), *sys.argv[1:]])[:300])
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    _HELD[key] = fd


def release_work_dir(work_dir: str) -> None:
    """Release this process's hold of ``work_dir`` (nothing if it holds none)."""
    _release(osp.realpath(work_dir))


@atexit.register
def _release_all() -> None:
    """At exit, every hold still taken (a run that raised before releasing) is released."""
    for key in list(_HELD):
        _release(key)


def _release(key: str) -> None:
    fd = _HELD.pop(key, None)
    if fd is None:
        return
    try:
        os.ftruncate(fd, 0)  # empty: released cleanly
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_json(path: str, what: str):
    """A JSON file's content, or an :class:`UnreadableFileError` naming it.

    Args:
        path (str): The file.
        what (str): What it is (``'run metrics'``, ``'manifest'``), for the message.
    """
    try:
        with open(path, 'rb') as f:
            raw = f.read()
        return json.loads(raw)
    except (OSError, ValueError, RecursionError) as e:  # missing, unreadable, not UTF-8, not
        # JSON, nested too deep
        reason = ' '.join(str(e).split())[:200]
        raise UnreadableFileError(f'{what} {path!r} cannot be read ({type(e).__name__}: '
                                  f'{reason}): delete or restore the file') from e
