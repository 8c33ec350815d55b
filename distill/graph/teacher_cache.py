"""Teacher-output cache: the frozen teacher's recorded outputs, per image, reused.

The teacher of a graph is frozen (eval mode, ``no_grad``) and, with a deterministic training
pipeline, sees the same input tensor for an image at every epoch and in every run of a grid. Its
taps' records on that image are then the same each time, so they are computed once and read
back: a step whose images are all cached skips the teacher's forward entirely.

What is cached: exactly the records of the teacher's taps (:attr:`DistillGraph.teacher_recorders`:
the head's forward, and the neck or tower taps the run's edges read), each image's slice of the
batch. Cross-head outputs (CrossKD) are computed from the student's features at every step and
never cached; only the teacher's own records they read (its tower statistics) are.

Keys (:mod:`distill.graph.cache_key`). A cache directory is named by :func:`teacher_key`: the
sha256 of the teacher checkpoint's content when the run starts, the teacher config, the train
dataset config and its pipelines, the data preprocessors, the step's precision (AMP), the
storage dtype, the library versions and the device; inside it one folder per tap (its
recorder config), one file per image, named by :func:`image_key`: the image's identity
(``img_path`` with the file's size and modification time, ``img_id``), the source (leaf dataset
and pipeline) that produced the sample, *and* the shapes it was run at (``img_shape``,
``scale_factor``, ``flip``, ``flip_direction``, ``batch_input_shape``, ``pad_shape`` ...): the
teacher's output on an image depends on how far the batch pads it, so an image met in a batch
of another padded size is a miss, computed and stored under that shape.

Files are written atomically and hold their full key and a sha256 of their tensors; a file whose
key, format or digest does not match, or that does not load, is stale or damaged: it is deleted,
the step runs the teacher, and the file is written again (a warning says so). Never used.

Budgets: the first stored batch gives the bytes per image; times the dataset's images (under
DDP each rank meets other images each epoch, so its memory can come to hold them all) that must
fit the memory and disk budgets, else :class:`TeacherCacheError` names the size needed, at the
first step, before any update. The disk budget is kept at every store too: a file that would
take the key's folder over it is not written (a warning says so once), and the folder's size
is measured again whenever this process's count of it (its own files times the number of
ranks, which share the folder) comes near the budget.
"""

from __future__ import annotations

import hashlib
import io
import os
import os.path as osp
import shutil

import torch
from mmengine.dist import get_world_size
from mmengine.logging import print_log
from torch import Tensor

from distill.compat import atomic_write
from distill.graph.cache_key import (  # noqa: F401  (re-exported: the cache's public names)
    CACHE_FORMAT,
    IMAGE_FIELDS,
    TeacherCacheError,
    digest_text,
    image_key,
    teacher_key,
)

MIB = float(1 << 20)


# ------------------------------------------------------------------ nested records
def tree_map(fn, node):
    """``fn`` applied to every tensor of a nested tuple/list record (structure kept)."""
    if isinstance(node, Tensor):
        return fn(node)
    if isinstance(node, (list, tuple)):
        return type(node)(tree_map(fn, x) for x in node)
    return node


def tree_stack(items: list):
    """The batch record from per-image records (each tensor stacked on a new dim 0)."""
    first = items[0]
    if isinstance(first, Tensor):
        return torch.stack(items)
    if isinstance(first, (list, tuple)):
        return type(first)(tree_stack([it[i] for it in items]) for i in range(len(first)))
    return first


def tree_tensors(node) -> list[Tensor]:
    """The tensors of a nested record, in order."""
    if isinstance(node, Tensor):
        return [node]
    if isinstance(node, (list, tuple)):
        return [t for x in node for t in tree_tensors(x)]
    return []


def tree_cast(node, dtypes):
    """``node`` with its i-th tensor cast to ``dtypes[i]`` (names, :func:`tree_tensors` order)."""
    names = iter(dtypes)

    def cast(t: Tensor) -> Tensor:
        dtype = getattr(torch, next(names))
        return t if t.dtype == dtype else t.to(dtype)

    return tree_map(cast, node)


def tree_digest(node) -> str:
    """sha256 of a record's shapes, dtypes and bytes (detects a damaged cache file)."""
    h = hashlib.sha256()
    for t in tree_tensors(node):
        t = t.detach().cpu().contiguous()
        h.update(f'{tuple(t.shape)}{t.dtype};'.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    return h.hexdigest()


class TeacherCache:
    """Per-image teacher records in memory and on disk.

    Args:
        key (str): :func:`teacher_key` of the run.
        taps (dict[str, dict]): The teacher's recorder configs, by name.
        directory (str, optional): Root of the on-disk cache (a ``key`` folder is made in it);
            None: memory only.
        memory_mb (float): Memory budget (MiB); 0: no memory layer (disk only).
        disk_mb (float): Disk budget (MiB) of this key's folder.
        fp16 (bool): Store floating records as float16 (read back in their own dtype).
        num_images (int, optional): Images the cache may come to hold (the train dataset's),
            for the budget check at the first store.
        sources (dict, optional): The train dataset's sources and the extra fields their
            image keys need (:func:`~distill.graph.cache_key.tag_sources`); None: any source.
    """

    def __init__(self, key: str, taps: dict, directory: str | None = None,
                 memory_mb: float = 4096, disk_mb: float = 16384, fp16: bool = False,
                 num_images: int | None = None, sources: dict | None = None):
        self.key, self.fp16, self.num_images, self.sources = key, fp16, num_images, sources
        self.memory_budget, self.disk_budget = memory_mb * MIB, disk_mb * MIB
        self.taps = {name: digest_text(cfg)[:12] for name, cfg in sorted(taps.items())}
        self.directory = osp.join(directory, key[:24]) if directory else None
        self.memory: dict[tuple[str, str], tuple] = {}
        self.memory_bytes = 0
        self.stats = dict(hits=0, misses=0, disk_reads=0, rebuilt=0)
        self._checked = False
        self._memory_full_warned = False
        #: The key folder's size on disk as last measured, and what this process wrote since.
        self._disk_measured, self._disk_written, self._disk_full = None, 0, False

    # ------------------------------------------------------------------ files
    def path(self, tap: str, image: str) -> str:
        name = hashlib.sha256(image.encode()).hexdigest()[:32]
        return osp.join(self.directory, f'{tap}-{self.taps[tap]}', f'{name}.pt')

    def _full_key(self, tap: str, image: str) -> str:
        return f'{self.key}|{tap}|{self.taps[tap]}|{image}'

    def _read_file(self, tap: str, image: str):
        path = self.path(tap, image)
        if not osp.isfile(path):
            return None
        try:
            payload = torch.load(path, map_location='cpu', weights_only=True)
            ok = (isinstance(payload, dict) and payload.get('format') == CACHE_FORMAT
                  and payload.get('key') == self._full_key(tap, image)
                  and payload.get('digest') == tree_digest(payload.get('records')))
            why = 'its key, format or digest does not match'
        except FileNotFoundError:  # deleted by another rank since it was seen: a miss
            return None
        except Exception as e:  # any unreadable file is damaged, whatever torch raises
            ok, why = False, f'{type(e).__name__}: {e}'
        if not ok:
            self.stats['rebuilt'] += 1
            print_log(f'[distill] teacher cache: {path} is stale or damaged ({why}); deleted, '
                      f'the teacher runs on this image and the file is written again',
                      logger='current', level=30)
            try:
                os.unlink(path)
            except OSError:
                pass
            return None
        self.stats['disk_reads'] += 1
        return payload['records'], payload['dtypes']

    # ------------------------------------------------------------------ the step
    def image_keys(self, data_samples) -> list[str]:
        """:func:`image_key` of each sample of a batch (computed once a step, for
        :meth:`load` and :meth:`store`)."""
        return [image_key(s.metainfo, self.sources) for s in data_samples]

    def load(self, images: list[str]) -> dict | None:
        """The batch's records per tap (``{name: list of records}``), or None on any miss.

        Every (tap, image) is looked up even after a miss, so that each stale or damaged file
        of the batch is found, deleted and written again by :meth:`store` in this step.

        Args:
            images (list[str]): :meth:`image_keys` of the batch.
        """
        per_tap: dict[str, list] = {}
        missing = False
        for tap in self.taps:
            entries = []
            for image in images:
                entry = self.memory.get((tap, image))
                if entry is None and self.directory is not None:
                    entry = self._read_file(tap, image)
                    if entry is not None:
                        self._keep_in_memory(tap, image, entry)
                missing |= entry is None
                entries.append(entry)
            if not missing:
                per_tap[tap] = self._batch(entries)
        self.stats['misses' if missing else 'hits'] += 1
        return None if missing else per_tap

    @staticmethod
    def _batch(entries: list) -> list:
        """One tap's batch records from its per-image entries, each tensor in its own dtype
        (the entries hold float16 copies with ``fp16``)."""
        records, dtypes = zip(*entries)
        out, start = [], 0
        for i in range(len(records[0])):
            out.append(tree_cast(tree_stack([r[i] for r in records]), dtypes[0][start:]))
            start += len(tree_tensors(records[0][i]))
        return out

    def fill(self, manager, per_tap: dict, device) -> None:
        """Put cached records into the teacher's recorders, as if its forward had run."""
        for tap, records in per_tap.items():
            recorder = manager.get_recorder(tap)
            recorder.reset_data_buffer()
            recorder.data_buffer.extend(
                tree_map(lambda t: t.to(device, non_blocking=True), r) for r in records)

    def store(self, manager, images: list[str]) -> None:
        """Cache each image's slice of what the teacher's recorders hold after its forward
        (``images``: :meth:`image_keys` of the batch)."""
        buffers = {tap: manager.get_recorder(tap).data_buffer for tap in self.taps}
        if not self._checked:
            self._check_budget(buffers, len(images))
            self._checked = True
        for tap, buffer in buffers.items():
            tensors = tree_tensors(buffer)
            bad = [tuple(t.shape) for t in tensors if t.dim() == 0 or len(t) != len(images)]
            if bad:
                raise TeacherCacheError(
                    f'teacher cache: the tap {tap!r} recorded tensors of shapes {bad[:3]}, not '
                    f'batch-first with the batch of {len(images)} images: it cannot be cached '
                    f'per image; drop it from teacher_taps or run without the cache')
            dtypes = [str(t.dtype).split('.')[-1] for t in tensors]
            cpu = [tree_map(lambda t: t.detach().cpu(), r) for r in buffer]  # one copy a batch
            for b, image in enumerate(images):
                if (tap, image) in self.memory:  # a hit of this batch (found in load)
                    continue
                entry = ([tree_map(lambda t: self._stored(t[b]), r) for r in cpu], dtypes)
                self._keep_in_memory(tap, image, entry)
                if self.directory is not None and not osp.isfile(self.path(tap, image)):
                    self._write_file(tap, image, entry)

    def _stored(self, t: Tensor) -> Tensor:
        """One image's slice, as its own tensor (a copy: never a view of the whole batch)."""
        if self.fp16 and t.is_floating_point():
            return t.to(torch.float16, copy=True)
        return t.clone()

    def _write_file(self, tap: str, image: str, entry) -> None:
        records, dtypes = entry
        buf = io.BytesIO()
        torch.save(dict(format=CACHE_FORMAT, key=self._full_key(tap, image), dtypes=dtypes,
                        records=records, digest=tree_digest(records)), buf)
        data = buf.getvalue()
        if self._disk_room(len(data)):
            atomic_write(data, self.path(tap, image))
            self._disk_written += len(data)

    def _disk_room(self, size: int) -> bool:
        """Whether a file of ``size`` bytes fits the disk budget. Every rank writes into the
        same folder, so this process counts its own writes once per rank; near the budget the
        folder is measured again (what the other ranks really wrote, files deleted)."""
        if self._disk_full:
            return False
        if self._disk_measured is None:  # an earlier run's files, other ranks'
            self._disk_measured = folder_bytes(self.directory)
        if self._disk_measured + self._disk_written * get_world_size() + size \
                <= self.disk_budget:
            return True
        self._disk_measured, self._disk_written = folder_bytes(self.directory), 0
        if self._disk_measured + size <= self.disk_budget:
            return True
        self._disk_full = True
        print_log(f'[distill] teacher cache: {self.directory} has reached its disk budget '
                  f'({self.disk_budget / MIB:.0f} MiB); further records are kept in memory '
                  f'only (--teacher-cache-disk-mb)', logger='current', level=30)
        return False

    def _keep_in_memory(self, tap: str, image: str, entry) -> None:
        size = sum(t.numel() * t.element_size() for t in tree_tensors(entry[0]))
        if self.memory_bytes + size > self.memory_budget:
            if self.memory_budget > 0 and not self._memory_full_warned:
                self._memory_full_warned = True
                print_log(f'[distill] teacher cache: the memory budget '
                          f'({self.memory_budget / MIB:.0f} MiB) is full (images met at more '
                          f'than one padded shape, or larger than the first batch\'s); '
                          f'further records are read from disk or recomputed',
                          logger='current', level=30)
            return
        self.memory[(tap, image)] = entry
        self.memory_bytes += size

    def _check_budget(self, buffers: dict, batch: int) -> None:
        """Refuse, at the first store, a cache that cannot hold the whole epoch."""
        if self.num_images is None:
            return
        per_image = sum((2 if self.fp16 and t.is_floating_point() else t.element_size())
                        * t.numel() for buf in buffers.values()
                        for t in tree_tensors(buf)) / batch
        need = per_image * self.num_images / MIB
        what = (f'{self.num_images} images x {per_image / 1024:.0f} KiB of teacher records '
                f'(taps {sorted(self.taps)}) need {need:.0f} MiB')
        hint = ('set memory_mb / disk_mb of TeacherCacheHook (train_distill '
                '--teacher-cache-memory-mb / --teacher-cache-disk-mb), store float16 '
                '(--teacher-cache-fp16), or run without the cache')
        if self.memory_budget > 0 and need > self.memory_budget / MIB:
            raise TeacherCacheError(f'teacher cache: {what} of memory, over the memory budget '
                                    f'of {self.memory_budget / MIB:.0f} MiB: {hint}')
        if self.directory is None:
            return
        if need > self.disk_budget / MIB:
            raise TeacherCacheError(f'teacher cache: {what} under {self.directory}, over the '
                                    f'disk budget of {self.disk_budget / MIB:.0f} MiB: {hint}')
        os.makedirs(self.directory, exist_ok=True)
        self._disk_measured = folder_bytes(self.directory)  # an earlier run's, other ranks'
        have = self._disk_measured / MIB
        free = shutil.disk_usage(self.directory).free / MIB
        if need - have > free:
            raise TeacherCacheError(f'teacher cache: {what} under {self.directory}, only '
                                    f'{free:.0f} MiB free on that disk: point the cache '
                                    f'elsewhere (--teacher-cache-dir) or run without it')


def _scan(path: str) -> list:
    """The entries of a folder; none if it vanished (another rank may be rebuilding it)."""
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def folder_bytes(directory: str) -> int:
    """The bytes of the cache files under a key folder (one level of tap folders), counting
    files that vanish while it is scanned (another rank replacing or deleting them) as 0."""
    total = 0
    for tap in _scan(directory):
        if not tap.is_dir(follow_symlinks=False):
            continue
        for e in _scan(tap.path):
            try:
                total += e.stat(follow_symlinks=False).st_size if e.is_file() else 0
            except FileNotFoundError:
                pass
    return total
