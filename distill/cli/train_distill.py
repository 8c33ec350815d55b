"""Train a student with a teacher through a distill recipe (one DistillGraph per run).

Usage::

    python tools/train_distill.py --student configs/tiny/gfl_s_digits.py \\
        --teacher configs/tiny/gfl_l_digits.py --teacher-ckpt work_dirs/gfl_l_digits/epoch_24.pth \\
        --recipe kd_ld_vlr [--work-dir DIR] [--resume [CKPT]] [--seed N] \\
        [--cfg-options k=v ...] [--launcher pytorch]

The student config gives everything but the model's teacher and edges: data, schedule,
optimizer, hooks, evaluation (``--cfg-options`` override it, e.g. ``train_cfg.max_epochs=6``).
The teacher config gives only the teacher's model; the recipe (``configs/recipes/<name>.py``
or a file) gives the edges. The assembled config is written to the work dir, as mmengine does.
Before training, the pair is checked (classes, ``reg_max``, strides, priors per location, input
normalisation) and the teacher checkpoint must fit the teacher config key for key.
"""

from __future__ import annotations

import argparse
import os.path as osp

from mmengine.config import Config, ConfigDict

import distill  # noqa: F401  (compat fixes + registries)
from distill.cli.common import check_checkpoint, load_config
from distill.cli.train import add_run_arguments, apply_run_options

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RECIPE_DIR = osp.join(REPO, 'configs', 'recipes')


def resolve_recipe(recipe: str) -> str:
    """The recipe file of a name (``configs/recipes/<name>.py``) or a path."""
    if osp.isfile(recipe):
        return recipe
    path = osp.join(RECIPE_DIR, f'{recipe}.py')
    if not osp.isfile(path):
        import glob
        known = sorted(osp.basename(p)[:-3] for p in glob.glob(osp.join(RECIPE_DIR, '*.py')))
        raise FileNotFoundError(f'recipe {recipe!r} is neither a file nor one of {known} '
                                f'(in {RECIPE_DIR})')
    return path


def recipe_name(recipe: str) -> str:
    return osp.splitext(osp.basename(recipe))[0]


def build_distill_config(student: str, recipe: str, teacher: str | None = None,
                         teacher_ckpt: str | None = None, cfg_options: dict | None = None,
                         work_dir: str | None = None) -> Config:
    """The runnable config of one distillation run.

    Args:
        student (str): Student config file (full mmdet config: model, data, schedule).
        recipe (str): Recipe name or file (its ``edges`` list).
        teacher (str, optional): Teacher config file (only its ``model`` is used). Needed when
            the recipe has edges.
        teacher_ckpt (str, optional): Teacher weights, path or URL.
        cfg_options (dict, optional): Overrides of the student config.
        work_dir (str, optional): Default ``work_dirs/<student>__<recipe>``.

    Returns:
        Config: with ``model`` a ``DistillGraph`` and ``distill`` recording the inputs.
    """
    recipe_file = resolve_recipe(recipe)
    edges = Config.fromfile(recipe_file).get('edges', [])
    name = f'{osp.splitext(osp.basename(student))[0]}__{recipe_name(recipe_file)}'
    cfg = load_config(student, cfg_options,
                      work_dir or osp.join('work_dirs', name))
    graph = dict(_scope_='mmrazor', type='DistillGraph',
                 architecture=dict(cfg.model, _scope_='mmdet'), edges=list(edges))
    if edges:
        if teacher is None or teacher_ckpt is None:
            raise ValueError(f'recipe {recipe_file} has edges {[e["name"] for e in edges]}: '
                             f'give --teacher and --teacher-ckpt')
        if not teacher_ckpt.startswith(('http://', 'https://')):
            check_checkpoint(teacher_ckpt)
        teacher_cfg = Config.fromfile(teacher)
        graph.update(teacher=dict(teacher_cfg.model, _scope_='mmdet'), teacher_ckpt=teacher_ckpt,
                     pair_names=(student, teacher))
    cfg.model = ConfigDict(graph)
    cfg.distill = dict(student=student, teacher=teacher if edges else None,
                       teacher_ckpt=teacher_ckpt if edges else None,
                       recipe=recipe_name(recipe_file), recipe_file=recipe_file)
    return cfg


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Distil a teacher into a student.')
    parser.add_argument('--student', required=True, help='student config (data, schedule, ...)')
    parser.add_argument('--teacher', help='teacher config (its model only)')
    parser.add_argument('--teacher-ckpt', help='teacher checkpoint, path or URL')
    parser.add_argument('--recipe', required=True,
                        help='recipe name in configs/recipes (none, kd, ld, ld_vlr, kd_ld_vlr) '
                             'or a recipe file')
    add_run_arguments(parser, 'work_dirs/<student>__<recipe>', 'tools/dist_train_distill.sh')
    return parser.parse_args(argv)


def build_runner(args):
    """The configured mmengine Runner (not started)."""
    from mmengine.runner import Runner

    cfg = build_distill_config(args.student, args.recipe, args.teacher, args.teacher_ckpt,
                               args.cfg_options, args.work_dir)
    apply_run_options(cfg, args)
    return Runner.from_cfg(cfg)


def main(argv=None):
    runner = build_runner(parse_args(argv))
    runner.train()
    return runner


if __name__ == '__main__':
    main()
