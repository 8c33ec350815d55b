"""Dependencies point down: nothing in ``distill/`` outside ``distill/cli`` imports the tools.

``distill/cli`` holds the command-line tools; the library (graph, losses, export, ...) must be
usable without them, so an import of ``distill.cli`` anywhere else (at the top of a file or
inside a function) is a layering mistake. Checked on the source with ``ast``.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'distill'
UPWARD = ('distill.cli', 'tools', 'tests', 'benchmarks')


def _package(path: Path) -> str:
    """The dotted package a file of ``distill/`` is in (``distill.graph`` for graph/x.py)."""
    return '.'.join(path.relative_to(PACKAGE.parent).with_suffix('').parts[:-1])


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in the file, relative ones resolved in ``package``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ''
            if node.level:  # from . import x / from ..cli import y
                base = package.split('.')[:len(package.split('.')) - node.level + 1]
                module = '.'.join(base + ([module] if module else []))
            found += [(node.lineno, f'{module}.{a.name}') for a in node.names]
    return found


def _upward(module: str) -> bool:
    return any(module == u or module.startswith(u + '.') for u in UPWARD)


def test_the_check_sees_top_level_function_level_and_relative_imports(tmp_path):
    probe = tmp_path / 'probe.py'
    probe.write_text('import os\nfrom distill.cli.common import cli\nfrom .losses import kd\n'
                     'def f():\n    from ..cli import compare\n    import tools.train\n')
    found = _imports(probe, 'distill.graph')
    assert [m for _, m in found if _upward(m)] == [
        'distill.cli.common.cli', 'distill.cli.compare', 'tools.train']
    assert (3, 'distill.graph.losses.kd') in found


@pytest.mark.parametrize('path', sorted(p for p in PACKAGE.rglob('*.py')
                                        if 'cli' not in p.relative_to(PACKAGE).parts[:1]),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_module_does_not_import_the_tools(path):
    bad = [f'line {n}: {m}' for n, m in _imports(path, _package(path)) if _upward(m)]
    assert not bad, f'{path.relative_to(PACKAGE.parent)} imports upward: {bad}'
