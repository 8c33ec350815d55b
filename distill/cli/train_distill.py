"""Train a student with a teacher through a distill recipe (one DistillGraph per run).

Usage::

    python tools/train_distill.py --student configs/tiny/gfl_s_digits.py \\
        --teacher configs/tiny/gfl_l_digits.py \\
        --teacher-ckpt checkpoints/gfl_l_digits_e24_seed0.pth --recipe kd_ld_vlr [sdr] \\
        [--epochs N] [--work-dir DIR] [--resume [CKPT]] [--force-resume] [--seed N] \\
        [--cfg-options k=v ...] [--launcher pytorch] [--teacher-cache [--teacher-cache-fp16]
        [--teacher-cache-dir DIR] [--teacher-cache-memory-mb MB] [--teacher-cache-disk-mb MB]]

The student config gives everything but the model's teacher and edges: data, schedule,
optimizer, hooks, evaluation (``--epochs`` shortens the schedule with scaled lr milestones;
``--cfg-options`` override it). The teacher config gives only the teacher's model; the recipe
(``configs/recipes/<name>.py`` or a file) gives the edges. The assembled config is written to the
work dir, as mmengine does, with ``distill`` recording what defines the run (configs, recipe,
teacher checkpoint and its sha256), which ``--resume`` checks. Before training, the recipe's
edges are checked (loss and region types, taps, fields), the pair is checked (classes,
``reg_max``, strides, priors per location, input normalisation) and the teacher checkpoint must
fit the teacher config key for key. Configs and recipes are found from any directory.

``--teacher-cache`` keeps the frozen teacher's outputs per image (in memory and under the dataset
cache) and reads them back instead of running the teacher: see docs/teacher_cache.md.
"""

from __future__ import annotations

import argparse
import glob
import os.path as osp

from mmengine.config import ConfigDict

import distill  # noqa: F401  (compat fixes + registries)
from distill.cli.common import check_checkpoint, cli, load_config, read_config
from distill.cli.train import add_run_arguments, held_runner, train_and_release
from distill.datasets.cache import sha256_file
from distill.errors import ConfigError, RecipeError
from distill.graph.algorithm import DEFAULT_STUDENT_TAPS, DEFAULT_TEACHER_TAPS
from distill.graph.inherit import check_inherit
from distill.graph.recipe_check import check_edges, reads_teacher
from distill.graph.teacher_cache_hook import check_deterministic
from distill.paths import find_resource, recipe_dir


def resolve_recipe(recipe: str) -> str:
    """The recipe file of a name (``configs/recipes/<name>.py``) or a path."""
    found = find_resource(recipe)
    if found and osp.isfile(found):
        return found
    path = osp.join(recipe_dir(), f'{recipe}.py')
    if not osp.isfile(path):
        known = sorted(osp.basename(p)[:-3] for p in glob.glob(osp.join(recipe_dir(), '*.py')))
        raise RecipeError(f'--recipe {recipe!r} is neither a file nor one of {known} (in '
                          f'{recipe_dir()}): give a recipe name or a recipe file')
    return path


def recipe_name(recipe) -> str:
    """``kd_ld_vlr`` for a recipe name or file; ``kd_ld_vlr+sdr`` for a list of them."""
    recipes = split_recipes(recipe)
    return '+'.join(osp.splitext(osp.basename(r))[0] for r in recipes)


def split_recipes(recipe) -> list[str]:
    """A recipe list from a list, or from one string whose recipes are joined by ``+``."""
    items = [recipe] if isinstance(recipe, str) else list(recipe)
    return [r for item in items for r in item.split('+')]


def read_recipes(recipe) -> tuple[list[dict], list[str]]:
    """The edges of one or several recipes (concatenated) and their files, each recipe's
    edges checked (:func:`~distill.graph.recipe_check.check_edges`, naming its file).

    Raises:
        RecipeError: an unknown recipe, a mistake in its edges, or the same edge name in two
            recipes.
    """
    edges, files, _ = read_recipes_with_options(recipe)
    return edges, files


def read_recipes_with_options(recipe) -> tuple[list[dict], list[str], dict]:
    """:func:`read_recipes` plus the recipes' ``student_options``: student config overrides a
    recipe makes part of its method (e.g. ``ld_nodfl``: the student's DFL off), merged in
    recipe order (``--cfg-options`` override them).

    Raises:
        RecipeError: as :func:`read_recipes`; ``student_options`` that is not a dict.
    """
    edges, files, options = [], [], {}
    for r in split_recipes(recipe):
        path = resolve_recipe(r)
        files.append(path)
        cfg = read_config(path, 'recipe file')
        own = cfg.get('edges', [])
        check_edges(own, path, DEFAULT_STUDENT_TAPS, DEFAULT_TEACHER_TAPS)
        extra = cfg.get('student_options', {})
        if not isinstance(extra, dict):
            raise RecipeError(f'{path}: student_options={extra!r} must be a dict of student '
                              f'config overrides, e.g. {{"model.bbox_head.loss_dfl.loss_weight": '
                              f'0.0}}')
        options.update(extra)
        edges += list(own)
    names = [e.get('name') for e in edges if isinstance(e, dict)]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes and len(files) > 1:
        raise RecipeError(f'recipes {files} both have edge(s) {dupes}: edge names must be '
                          f'unique in a run (rename them in one recipe)')
    return edges, files, options


def build_distill_config(student: str, recipe: str, teacher: str | None = None,
                         teacher_ckpt: str | None = None, cfg_options: dict | None = None,
                         work_dir: str | None = None, epochs: int | None = None):
    """The runnable config of one distillation run.

    Args:
        student (str): Student config file (full mmdet config: model, data, schedule).
        recipe (str | list[str]): Recipe name or file (its ``edges`` list), or several (their
            edges are concatenated, e.g. ``['kd_ld_vlr', 'sdr']`` or ``'kd_ld_vlr+sdr'``).
        teacher (str, optional): Teacher config file (only its ``model`` is used). Needed when
            some edge reads the teacher (not for self-distillation alone, e.g. ``sdr``).
        teacher_ckpt (str, optional): Teacher weights, path or URL.
        cfg_options (dict, optional): Overrides of the student config.
        work_dir (str, optional): Default ``work_dirs/<student>__<recipe>``.
        epochs (int, optional): Shorten the student's schedule (milestones scaled).

    Returns:
        Config: with ``model`` a ``DistillGraph`` and ``distill`` recording the inputs.

    Raises:
        RecipeError: the recipe's edges name an unknown loss, region or tap, or miss a field.
        ConfigError: a config cannot be read, or a teacher is missing for a recipe with edges.
        CheckpointError: the teacher checkpoint is missing or unreadable.
    """
    edges, files, recipe_options = read_recipes_with_options(recipe)
    recipe_file = files[0] if len(files) == 1 else ' + '.join(files)
    name = f'{osp.splitext(osp.basename(student))[0]}__{recipe_name(files)}'
    cfg = load_config(student, {**recipe_options, **(cfg_options or {})} or None,
                      work_dir or osp.join('work_dirs', name), epochs)
    graph = dict(_scope_='mmrazor', type='DistillGraph',
                 architecture=dict(cfg.model, _scope_='mmdet'), edges=list(edges),
                 edges_source=recipe_file)
    record = dict(student=cfg.filename, teacher=None, teacher_ckpt=None,
                  teacher_ckpt_sha256=None, recipe=recipe_name(files),
                  recipe_file=recipe_file)
    from_teacher = [e['name'] for e in edges if reads_teacher(e)]
    if from_teacher:  # a teacher no edge reads is not built (self-distillation alone)
        if teacher is None or teacher_ckpt is None:
            raise ConfigError(f'recipe {recipe_file} has edges {from_teacher} that read a '
                              f'teacher: give --teacher CONFIG and --teacher-ckpt CKPT (or '
                              f'--recipe none for the student alone)')
        teacher_cfg = read_config(teacher, 'teacher config')
        if not teacher_ckpt.startswith(('http://', 'https://')):
            # absolute: the run's config (in its work dir) is used from other directories too
            teacher_ckpt = osp.abspath(find_resource(teacher_ckpt) or teacher_ckpt)
            check_checkpoint(teacher_ckpt)
            record['teacher_ckpt_sha256'] = sha256_file(teacher_ckpt)
        graph.update(teacher=dict(teacher_cfg.model, _scope_='mmdet'), teacher_ckpt=teacher_ckpt,
                     pair_names=(cfg.filename, teacher_cfg.filename))
        record.update(teacher=teacher_cfg.filename, teacher_ckpt=teacher_ckpt)
    inherit = recipe_inherit(files)
    if inherit:  # FGD's inheriting start: a different start, recorded with the run
        graph['inherit_from_teacher'] = inherit
        record['inherit_from_teacher'] = inherit
    cfg.model = ConfigDict(graph)
    cfg.distill = record
    return cfg


def recipe_inherit(files: list[str]) -> list[str]:
    """The student modules the recipes initialise from the teacher's (their
    ``inherit_from_teacher``, e.g. ``fgd_inherit``: ``['neck', 'bbox_head']``), in order,
    each once."""
    out: list[str] = []
    for path in files:
        names = check_inherit(read_config(path, 'recipe file').get('inherit_from_teacher', ()),
                              path)
        out += [n for n in names if n not in out]
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Distil a teacher into a student.')
    parser.add_argument('--student', required=True, help='student config (data, schedule, ...)')
    parser.add_argument('--teacher', help='teacher config (its model only)')
    parser.add_argument('--teacher-ckpt', help='teacher checkpoint, path or URL')
    parser.add_argument('--recipe', required=True, nargs='+',
                        help='recipe name in configs/recipes (none, kd, ld, ld_vlr, kd_ld_vlr, '
                             'sdr, ...) or a recipe file; several are combined into one run '
                             '(e.g. --recipe kd_ld_vlr sdr: a teacher\'s edges and the '
                             'student\'s self-distillation)')
    add_run_arguments(parser, 'work_dirs/<student>__<recipe>', 'tools/dist_train_distill.sh')
    add_cache_arguments(parser)
    return parser.parse_args(argv)


def add_cache_arguments(parser) -> None:
    """The teacher-output cache options (:class:`~distill.graph.TeacherCacheHook`)."""
    group = parser.add_argument_group('teacher-output cache (docs/teacher_cache.md)')
    group.add_argument('--teacher-cache', action='store_true',
                       help='read the teacher\'s outputs back from a per-image cache instead of '
                            'running it (needs a train pipeline without random transforms)')
    group.add_argument('--teacher-cache-dir', default='auto',
                       help='on-disk cache root (default: <dataset cache>/teacher_outputs); '
                            '"none": memory only')
    group.add_argument('--teacher-cache-fp16', action='store_true',
                       help='store the outputs in float16 (half the size)')
    group.add_argument('--teacher-cache-memory-mb', type=float, default=4096,
                       help='memory budget per process, MiB (default %(default)s; 0: disk only)')
    group.add_argument('--teacher-cache-disk-mb', type=float, default=16384,
                       help='disk budget, MiB (default %(default)s)')


def apply_cache_options(cfg, args) -> None:
    """Add the ``TeacherCacheHook`` asked for by ``--teacher-cache``, after checking that
    the train pipeline is deterministic (before anything is built)."""
    if not getattr(args, 'teacher_cache', False):
        return
    check_deterministic(cfg, cfg.filename or args.student)
    custom = [h for h in cfg.get('custom_hooks') or [] if h.get('type') != 'TeacherCacheHook']
    directory = None if args.teacher_cache_dir.lower() == 'none' else args.teacher_cache_dir
    cfg.custom_hooks = custom + [dict(
        type='TeacherCacheHook', directory=directory, fp16=args.teacher_cache_fp16,
        memory_mb=args.teacher_cache_memory_mb, disk_mb=args.teacher_cache_disk_mb)]


def build_runner(args):
    """The configured mmengine Runner (not started)."""
    cfg = build_distill_config(args.student, args.recipe, args.teacher, args.teacher_ckpt,
                               args.cfg_options, args.work_dir, args.epochs)
    apply_cache_options(cfg, args)
    return held_runner(cfg, args)


def main(argv=None):
    return train_and_release(build_runner(parse_args(argv)))


cli_main = cli(main)

if __name__ == '__main__':
    cli_main()
