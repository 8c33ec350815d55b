"""Keys of the teacher-output cache: everything that makes a teacher record what it is.

A record may only be read back by a run whose teacher would compute the same tensor. Two keys
say so (docs/teacher_cache.md):

* the **folder key** (:func:`teacher_key`): the sha256 of the teacher checkpoint's content,
  hashed when the run starts (:func:`checkpoint_sha256`; not the one written in the run's
  config, which a checkpoint replaced in place no longer matches), the teacher's model config,
  the train dataset config and its pipelines, the data preprocessors, the step's precision, the
  storage dtype, and the environment the teacher runs in (:func:`environment`: library
  versions, device type, GPU and its numerics flags, the source of the distill modules the
  teacher is made of);
* the **image key** (:func:`image_key`): the image's identity (``img_path`` with its file's
  size and modification time, ``img_id``), the shapes it was run at (``img_shape``,
  ``batch_input_shape`` ...) and its *source*: a digest of the leaf dataset config (type,
  annotation file, pipeline) that produced the sample (:func:`tag_sources`), so that two
  pipelines over the same files, e.g. in a ``ConcatDataset``, never share records. A field the
  key needs that a sample lacks is an error, never dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
import sys
from pathlib import Path

import torch
from mmengine.logging import print_log

from distill.compat import atomic_write
from distill.datasets.cache import sha256_file
from distill.errors import DistillError

#: Bump when the file layout or a key changes: older files are then stale (never read).
CACHE_FORMAT = 3
#: The metainfo field :func:`tag_sources` gives each sample: its leaf dataset's digest.
SOURCE_FIELD = 'distill_cache_source'
#: Fields every image key needs (and ``img_path`` or ``img_id``).
REQUIRED_FIELDS = (SOURCE_FIELD, 'img_shape', 'batch_input_shape')
#: The data-sample fields that make up an image key when present.
IMAGE_FIELDS = ('img_path', 'img_id', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                'flip_direction', 'batch_input_shape', 'pad_shape', SOURCE_FIELD)
#: Leaf dataset config keys that do not change a sample (a subset reads the same records).
_NOT_SAMPLE = ('indices', 'lazy_init', 'serialize_data', 'max_refetch')
#: The memo of checkpoint hashes (per cache root): path -> stat signature and sha256.
HASH_MEMO = 'checkpoint_sha256.json'
_memo: dict = {}


class TeacherCacheError(DistillError, ValueError):
    """The teacher-output cache cannot be used as configured (random pipeline, budget)."""


def digest_text(obj) -> str:
    """sha256 of an object's canonical JSON (sorted keys; other types by ``str``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def teacher_key(ckpt_sha256: str, teacher_cfg, data, data_preprocessor, fp16: bool,
                env: dict) -> str:
    """The hex digest naming one cache directory: what determines every teacher record.

    Args:
        ckpt_sha256 (str): The teacher checkpoint's sha256 now (:func:`checkpoint_sha256`),
            or its loaded weights'.
        teacher_cfg (dict): The teacher's model config.
        data: The train data's config: its dataset and pipelines, the step's precision
            (:func:`~distill.graph.teacher_cache_hook.key_parts`).
        data_preprocessor (dict): The preprocessor configs that make the teacher's batch.
        fp16 (bool): Records stored in float16.
        env (dict): :func:`environment` of the teacher.
    """
    return digest_text(dict(format=CACHE_FORMAT, ckpt=ckpt_sha256, teacher=teacher_cfg,
                            data=data, preprocessor=data_preprocessor, env=env,
                            dtype='float16' if fp16 else 'native'))


def environment(teacher: torch.nn.Module) -> dict:
    """What besides weights and inputs decides a teacher's outputs: the versions of torch,
    mmcv, mmdet, mmengine, mmrazor, numpy, OpenCV (image decoding) and distill, the device
    type (on a GPU: its name, CUDA, cuDNN and the TF32 flags), and a digest of the source
    files of the distill modules the teacher is built from (a model registered by distill
    changes with its code, not with distill's version)."""
    import cv2
    import mmcv
    import mmdet
    import mmengine
    import mmrazor
    import numpy

    import distill
    param = next(iter(teacher.parameters()), None)
    device = param.device if param is not None else torch.device('cpu')
    env = dict(torch=torch.__version__, mmcv=mmcv.__version__, mmdet=mmdet.__version__,
               mmengine=mmengine.__version__, mmrazor=mmrazor.__version__,
               numpy=numpy.__version__, cv2=cv2.__version__, distill=distill.__version__,
               device=device.type)
    if device.type == 'cuda':
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(),
                   tf32=(torch.backends.cuda.matmul.allow_tf32,
                         torch.backends.cudnn.allow_tf32))
    files = sorted({osp.realpath(sys.modules[m].__file__)
                    for m in {type(x).__module__ for x in teacher.modules()}
                    if m.split('.')[0] == 'distill' and m in sys.modules})
    env['distill_code'] = hashlib.sha256(b''.join(
        Path(f).read_bytes() for f in files)).hexdigest()
    return env


# ------------------------------------------------------------------ the checkpoint
def _signature(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _read_memo(memo_path: str | None) -> dict:
    if memo_path is None or not osp.isfile(memo_path):
        return {}
    try:
        with open(memo_path) as f:
            memo = json.load(f)
        return memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):  # damaged or vanishing: rehash, rewrite
        return {}


def checkpoint_sha256(path: str, memo_dir: str | None = None) -> str:
    """The sha256 of a checkpoint file's content now, rehashed only when the file changed.

    The hash is kept with the file's size, modification time, change time and inode (in this
    process, and in ``<memo_dir>/checkpoint_sha256.json``); any of them changed, the file is
    hashed again. A file replaced in place thus always gets its own hash.

    Args:
        path (str): The checkpoint file.
        memo_dir (str, optional): Where the memo file is kept (the cache root); None: in
            this process only.
    """
    real = osp.realpath(path)
    memo_path = osp.join(memo_dir, HASH_MEMO) if memo_dir else None
    sig = _signature(real)
    entry = _memo.get(real) or _read_memo(memo_path).get(real)
    if isinstance(entry, dict) and entry.get('stat') == sig and entry.get('sha256'):
        _memo[real] = entry
        return entry['sha256']
    sha = sha256_file(real)
    if _signature(real) != sig:  # changed while hashed: hash again next time
        return sha
    _memo[real] = dict(stat=sig, sha256=sha)
    if memo_path is not None:
        try:
            memo = _read_memo(memo_path)
            memo[real] = _memo[real]
            atomic_write(json.dumps(memo, sort_keys=True, indent=1), memo_path)
        except OSError as e:  # a read-only cache root: hashed again by the next run
            print_log(f'[distill] teacher cache: cannot write {memo_path} ({e}); the teacher '
                      f'checkpoint will be hashed again next time', logger='current', level=30)
    return sha


# ------------------------------------------------------------------ sources and images
def source_digest(leaf_cfg: dict) -> str:
    """The digest of a leaf dataset config (type, annotation file, data root and prefix,
    pipeline ...), which names the source of its samples in their image keys."""
    return digest_text({k: v for k, v in dict(leaf_cfg).items() if k not in _NOT_SAMPLE})[:16]


class SourceTagged:
    """A dataset's pipeline that writes its source digest into each packed data sample's
    metainfo (:data:`SOURCE_FIELD`).

    Args:
        pipeline (callable): The dataset's pipeline (a ``Compose``).
        source (str): :func:`source_digest` of the dataset's config.
        where (str): The dataset's config field (for errors).
    """

    def __init__(self, pipeline, source: str, where: str):
        self.pipeline, self.source, self.where = pipeline, source, where

    def __call__(self, data):
        out = self.pipeline(data)
        if out is None:  # a transform dropped the sample; the dataset fetches another
            return None
        sample = out.get('data_samples') if isinstance(out, dict) else None
        if not hasattr(sample, 'set_metainfo'):
            raise TeacherCacheError(
                f'teacher cache: {self.where}.pipeline does not end in a data sample with '
                f'metainfo (got {type(sample).__name__}): end it with PackDetInputs, or run '
                f'without the cache')
        sample.set_metainfo({SOURCE_FIELD: self.source})
        return out

    def __getattr__(self, name):  # ``transforms`` etc. of the wrapped pipeline
        if name in ('pipeline', 'source', 'where'):
            raise AttributeError(name)
        return getattr(self.pipeline, name)

    def __repr__(self) -> str:
        return f'SourceTagged({self.source}, {self.pipeline!r})'


def _leaves(cfg, dataset, where: str) -> list[tuple]:
    """``(field, config, dataset)`` of each leaf of a built dataset, paired with its config."""
    if not isinstance(cfg, dict):
        raise TeacherCacheError(f'teacher cache: {where} is {type(cfg).__name__}, not a '
                                f'dataset config: its samples\' source cannot be named')
    if hasattr(dataset, 'datasets'):  # ConcatDataset
        cfgs = cfg.get('datasets')
        if not isinstance(cfgs, (list, tuple)) or len(cfgs) != len(dataset.datasets):
            raise TeacherCacheError(f'teacher cache: {where} is a {type(dataset).__name__} '
                                    f'of {len(dataset.datasets)} datasets, but its config '
                                    f'has datasets={cfgs!r:.80}')
        return [x for i, (c, d) in enumerate(zip(cfgs, dataset.datasets))
                for x in _leaves(c, d, f'{where}.datasets.{i}')]
    if hasattr(dataset, 'dataset') and isinstance(cfg.get('dataset'), dict):
        if cfg.get('pipeline') is not None:
            raise TeacherCacheError(f'teacher cache: {where} ({cfg.get("type")}) has a '
                                    f'pipeline of its own over another dataset\'s samples: '
                                    f'not supported, run without the cache')
        return _leaves(cfg['dataset'], dataset.dataset, f'{where}.dataset')
    if not callable(getattr(dataset, 'pipeline', None)):
        raise TeacherCacheError(f'teacher cache: {where} ({type(dataset).__name__}) has no '
                                f'pipeline to tag its samples with their source')
    return [(where, cfg, dataset)]


def tag_sources(dataset_cfg, dataset, needs=None,
                where: str = 'train_dataloader.dataset') -> dict[str, tuple]:
    """Make every leaf of a built train dataset tag its samples with their source.

    Args:
        dataset_cfg (dict): The dataset's config (``train_dataloader.dataset``).
        dataset: The dataset built from it (wrappers included).
        needs (callable, optional): ``needs(pipeline) -> fields``: the metainfo fields the
            image keys of that pipeline's samples need besides :data:`REQUIRED_FIELDS`
            (a keyed random transform's draw).
        where (str): The config field of ``dataset_cfg`` (for errors).

    Returns:
        dict: ``{source digest: fields its samples' keys need}``, for :func:`image_key`.
    """
    sources: dict[str, tuple] = {}
    for field, cfg, leaf in _leaves(dataset_cfg, dataset, where):
        pipeline = leaf.pipeline
        if isinstance(pipeline, SourceTagged):
            pipeline = pipeline.pipeline
        digest = source_digest(cfg)
        leaf.pipeline = SourceTagged(pipeline, digest, field)
        extra = needs(cfg.get('pipeline')) if needs is not None else ()
        sources[digest] = tuple(sorted(set(sources.get(digest, ())) | set(extra)))
    return sources


def image_key(meta: dict, sources: dict | None = None) -> str:
    """The identity of one teacher input, from its data sample's metainfo (and, for an image
    file, its size and modification time: a file replaced in place is another input).

    Args:
        meta (dict): The sample's metainfo (after the data preprocessor).
        sources (dict, optional): :func:`tag_sources`' answer: the known sources and the
            extra fields their keys need; None: any source, no extra field.

    Raises:
        TeacherCacheError: a field the key needs is missing, or the source is unknown.
    """
    if meta.get('img_path') is None and meta.get('img_id') is None:
        raise TeacherCacheError(
            f'teacher cache: a data sample has neither img_path nor img_id in its metainfo '
            f'(keys: {sorted(meta)}), so its teacher outputs cannot be told from another '
            f"image's: keep them in PackDetInputs' meta_keys, or run without the cache")
    source = meta.get(SOURCE_FIELD)
    if source is not None and sources is not None and source not in sources:
        raise TeacherCacheError(f'teacher cache: a data sample of {meta.get("img_path")} comes '
                                f'from the source {source}, not one of the train dataset\'s '
                                f'{sorted(sources)}')
    needed = REQUIRED_FIELDS + tuple((sources or {}).get(source, ()))
    missing = [k for k in needed if k not in meta]  # None is a value (no flip: direction)
    if missing:
        raise TeacherCacheError(
            f'teacher cache: a data sample of {meta.get("img_path", meta.get("img_id"))} has no '
            f'{missing} in its metainfo (keys: {sorted(meta)}), which its key needs: '
            f'{SOURCE_FIELD} is set by TeacherCacheHook (distill.graph.cache_key.tag_sources), '
            f'batch_input_shape by the data preprocessor, the others by the pipeline (keep '
            f"them in PackDetInputs' meta_keys); or run without the cache")
    key = {k: meta[k] for k in IMAGE_FIELDS if k in meta}
    path = meta.get('img_path')
    if isinstance(path, str) and osp.isfile(path):
        st = os.stat(path)
        key['file'] = (st.st_size, st.st_mtime_ns)
    return json.dumps(key, sort_keys=True,
                      default=lambda v: v.tolist() if hasattr(v, 'tolist') else str(v))
