"""Where the package's own configs, recipes and checkpoints are, wherever a tool is run from.

A path given to a tool is used as given when it exists (relative to the current directory).
Otherwise a relative path such as ``configs/tiny/gfl_s_digits.py`` is looked up in the package's
resource roots: the source checkout the package is installed from (editable install) and
``distill/.mim`` (a regular install copies ``configs/`` and ``checkpoints/`` there, as mmdet
does). So ``distill-train-distill --student configs/tiny/gfl_s_digits.py --recipe kd ...``
works from any directory.
"""

from __future__ import annotations

import os
import os.path as osp

from distill.errors import ConfigError

PACKAGE_DIR = osp.dirname(osp.abspath(__file__))


def resource_roots() -> list[str]:
    """Directories holding the package's ``configs/`` (and ``checkpoints/``), best first."""
    roots = []
    for root in (osp.dirname(PACKAGE_DIR), osp.join(PACKAGE_DIR, '.mim')):
        if osp.isdir(osp.join(root, 'configs')):
            roots.append(root)
    return roots


def find_resource(path: str) -> str | None:
    """``path`` if it exists, else the package's own file of that relative path (or None)."""
    if osp.exists(path):
        return path
    if osp.isabs(path):
        return None
    for root in resource_roots():
        for candidate in (osp.join(root, path), osp.join(root, 'configs', path)):
            if osp.exists(candidate):
                return candidate
    return None


def resolve_config(path: str, what: str = 'config file') -> str:
    """The file of a config given as a path or as a path inside the package's ``configs/``.

    Raises:
        ConfigError: naming the path, the current directory and where else it was looked for.
    """
    found = find_resource(path)
    if found is None or not osp.isfile(found):
        where = ', '.join(resource_roots()) or 'no package resource root'
        kind = 'is a directory' if found else 'not found'
        raise ConfigError(f'{what} {path!r} {kind} (looked in the current directory '
                          f'{os.getcwd()} and in {where}): check the path')
    return found


def recipe_dir() -> str:
    """The package's ``configs/recipes`` directory."""
    roots = resource_roots()
    return osp.join(roots[0] if roots else osp.dirname(PACKAGE_DIR), 'configs', 'recipes')
