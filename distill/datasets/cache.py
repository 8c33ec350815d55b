"""Generate embedded datasets once into a cache directory and reuse them.

Layout of one prepared dataset (COCO convention)::

    <cache>/<name>-v<version>-seed<seed>/
        MANIFEST.json                  # name, version, seed, counts, sha256 of each json
        annotations/instances_train.json
        annotations/instances_val.json
        train/*.jpg
        val/*.jpg

The cache root is ``$DISTILL_DATA`` if set, else ``~/.cache/distill/datasets``. Generation writes
into a temporary sibling directory and renames it into place, under a file lock, so concurrent
processes (DDP ranks, parallel tests) generate once and never see a half-written dataset.

A directory without ``MANIFEST.json`` (an interrupted older layout) is deleted and generated
again. A directory with a manifest is checked on every use (:func:`verify_prepared`: the manifest
must be JSON and describe this dataset, and each json must still have the sha256 it records, a
few milliseconds); a damaged one is an error that names the file and says to delete the
directory. It is not deleted automatically: other processes may be reading it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

from mmengine.logging import print_log

from distill.compat import atomic_write

from .errors import DatasetConfigError, short

SPLITS = ('train', 'val')


def cache_root() -> Path:
    """Where embedded datasets live: ``$DISTILL_DATA`` or ``~/.cache/distill/datasets``."""
    env = os.environ.get('DISTILL_DATA')
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'distill' / 'datasets'


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def dump_json(obj, path: str | os.PathLike) -> None:
    """Write ``obj`` as canonical JSON (sorted keys, fixed separators), atomically.

    Canonical output makes the file's hash a fingerprint of its content: the same seed gives the
    same bytes.
    """
    atomic_write(json.dumps(obj, sort_keys=True, separators=(',', ':')), path)


def prepared_dir(name: str, version: int, seed: int, root: str | os.PathLike | None = None) -> Path:
    """The directory a dataset with this name/version/seed is (or will be) prepared in."""
    return Path(root or cache_root()) / f'{name}-v{version}-seed{seed}'


def ensure_prepared(name: str, version: int, seed: int,
                    build: Callable[[Path, int], dict],
                    root: str | os.PathLike | None = None) -> Path:
    """Return the prepared dataset directory, generating it first if needed.

    Args:
        name (str): Dataset name, e.g. ``'digits-scenes'``.
        version (int): Bump when the generator changes, so stale caches are not reused.
        seed (int): Generation seed.
        build (Callable[[Path, int], dict]): ``build(tmp_dir, seed)`` writes the dataset into
            ``tmp_dir`` and returns summary counts for the manifest.
        root (str, optional): Cache root; defaults to :func:`cache_root`.

    Returns:
        Path: The prepared directory.
    """
    target = prepared_dir(name, version, seed, root)
    if (target / 'MANIFEST.json').is_file():
        verify_prepared(target, name, version, seed)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f'.{target.name}.lock'
    with open(lock_path, 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be generating it right now
        if (target / 'MANIFEST.json').is_file():
            verify_prepared(target, name, version, seed)
            return target
        tmp = target.parent / f'.{target.name}.tmp-{os.getpid()}'
        shutil.rmtree(tmp, ignore_errors=True)
        if target.exists():  # a leftover without manifest: an interrupted older layout
            shutil.rmtree(target)
        print_log(f'[distill] generating dataset {name!r} (seed {seed}) into {target}',
                  logger='current')
        try:
            summary = build(tmp, seed)
            manifest = dict(name=name, version=version, seed=seed, summary=summary,
                            sha256={f'annotations/instances_{s}.json': sha256_file(
                                tmp / 'annotations' / f'instances_{s}.json') for s in SPLITS})
            dump_json(manifest, tmp / 'MANIFEST.json')
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def verify_prepared(target: Path, name: str, version: int, seed: int) -> dict:
    """Check a prepared directory against its ``MANIFEST.json``; returns the manifest.

    Raises:
        DatasetConfigError: The manifest is not JSON, describes another dataset or lacks its
            ``sha256`` table, or a json it lists is missing or no longer has its sha256 (deleted,
            truncated or edited). The message names the file and says to delete ``target``.
    """
    path = target / 'MANIFEST.json'
    fix = f'the dataset cache is damaged: delete the directory {target} and it is generated again'

    def damaged(what: str) -> DatasetConfigError:
        return DatasetConfigError(f'{what}; {fix} on next use')

    try:
        manifest = json.loads(path.read_bytes())
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise damaged(f'{path}: not valid JSON ({type(e).__name__}: {e}; '
                      f'{path.stat().st_size} bytes)') from e
    if not isinstance(manifest, dict):
        raise damaged(f'{path}: top level is a JSON {type(manifest).__name__}, not an object')
    expected = dict(name=name, version=version, seed=seed)
    for field, value in expected.items():
        if manifest.get(field) != value:
            raise damaged(f'{path}: field {field!r} is {short(manifest.get(field))}, expected '
                          f'{value!r} (this directory holds another dataset)')
    digests = manifest.get('sha256')
    if not isinstance(digests, dict) or not digests:
        raise damaged(f"{path}: field 'sha256' is {short(digests)}, expected a table "
                      "{relative path: sha256}")
    for rel, digest in sorted(digests.items()):
        file = target / rel
        if not file.is_file():
            raise damaged(f'{file}: listed in {path} (sha256 field {rel!r}) but missing')
        actual = sha256_file(file)
        if actual != digest:
            raise damaged(f'{file}: sha256 is {actual[:16]}... but {path} field sha256[{rel!r}] '
                          f'records {str(digest)[:16]}... (the file was truncated or edited, '
                          f'{file.stat().st_size} bytes now)')
    return manifest


def coco_skeleton(classes: tuple[str, ...]) -> dict:
    """An empty COCO detection json with categories ``1..len(classes)``."""
    return dict(
        info=dict(description='generated by distill (deterministic, seeded)'),
        licenses=[],
        images=[],
        annotations=[],
        categories=[dict(id=i + 1, name=c, supercategory='object') for i, c in enumerate(classes)])
