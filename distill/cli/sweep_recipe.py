"""Write variants of a recipe with one hyperparameter changed, for a tuning grid.

Usage::

    python tools/sweep_recipe.py ld --set main_ld.loss.loss_weight=0.1,0.5,1.0 \\
        --set main_ld.loss.T=5,15 --out work_dirs/sweeps/ld

writes one recipe file per value (``ld-loss_weight0.1.py``, ..., ``ld-T15.py``: one value
changed at a time, the others as in the recipe) and prints their paths, ready for
``tools/compare.py --recipes none ld <paths>`` on a tuning split (e.g.
``configs/tiny/gfl_s_digits_tune.py``, carved from train). A key is
``<edge name>.<field>[.<field>...]``; the edge and every field but the last must exist.
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import os.path as osp

from mmengine.config import Config

from distill.cli.common import cli
from distill.cli.train_distill import read_recipes, read_recipes_with_options, recipe_name
from distill.errors import RecipeError
from distill.files import check_output_path


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_sets(items: list[str]) -> list[tuple[str, list]]:
    """``['main_ld.loss.T=5,15']`` -> ``[('main_ld.loss.T', [5, 15])]``."""
    out = []
    for item in items:
        key, sep, values = item.partition('=')
        if not sep or not key or not values:
            raise RecipeError(f'--set {item!r}: expected <edge>.<field>=v1,v2,... e.g. '
                              f'main_ld.loss.T=5,15')
        out.append((key, [_value(v) for v in values.split(',')]))
    return out


def variant(edges: list[dict], key: str, value, source: str) -> list[dict]:
    """``edges`` with the field ``key`` (``<edge>.<field>...``) set to ``value``."""
    name, _, path = key.partition('.')
    edges = copy.deepcopy([dict(e) for e in edges])
    edge = next((e for e in edges if e.get('name') == name), None)
    if edge is None or not path:
        raise RecipeError(f'{source}: --set {key!r} names no edge field; its edges are '
                          f'{[e.get("name") for e in edges]} (key: <edge>.<field>, e.g. '
                          f'{edges[0].get("name") if edges else "main_ld"}.loss.T)')
    *parents, last = path.split('.')
    node = edge
    for i, part in enumerate(parents):
        if not isinstance(node.get(part), dict):
            raise RecipeError(f'{source}: --set {key!r}: edge {name!r} has no dict field '
                              f'{".".join(parents[:i + 1])!r} (it has {sorted(node)})')
        node[part] = dict(node[part])
        node = node[part]
    node[last] = value
    return edges


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('recipe', help='recipe name (configs/recipes) or file')
    parser.add_argument('--set', action='append', required=True, metavar='EDGE.FIELD=V1,V2',
                        help='a field and its values (repeatable; one changed at a time)')
    parser.add_argument('--out', required=True, help='folder for the recipe files')
    args = parser.parse_args(argv)
    check_output_path(args.out, '--out')
    edges, files, options = read_recipes_with_options(args.recipe)
    source, base = files[0], recipe_name(files)
    os.makedirs(args.out, exist_ok=True)
    paths = []
    for key, values in parse_sets(args.set):
        for value in values:
            cfg = dict(edges=variant(edges, key, value, source))
            if options:
                cfg['student_options'] = options
            path = osp.join(args.out, f'{base}-{key.rsplit(".", 1)[-1]}{value}.py')
            Config(cfg).dump(path)
            read_recipes(path)  # checked as a run would: a misspelt last field fails here
            paths.append(path)
    print(' '.join(paths))
    return paths


cli_main = cli(main)

if __name__ == '__main__':
    cli_main()
