"""The README and the ``docs/`` pages work as written: each ``.venv/bin/python tools/...``
command of their walkthrough blocks runs, in order, from a fresh directory, with tiny iteration
counts; every repository path they name exists; every relative Markdown link resolves.

The blocks are the ```bash blocks right after a line ``<!-- readme-test -->``. Each command
runs with this interpreter for ``.venv/bin/python``, from a directory holding only a link to
``tools/`` (configs, recipes and the shipped teacher are found through the package), with
``--cfg-options`` that shrink the data to 8 images (2 iterations an epoch; a compare grid is cut
to 2 recipes and 1 seed), so a drifted file name, flag or path fails here. The commands of one
page run in one directory, in the page's order (a later command may read an earlier one's
output); each page gets its own directory. Every test is parametrized by page, so a failure
names it.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO

TINY_TRAIN = ['train_dataloader.dataset.indices=8', 'train_dataloader.batch_size=4',
              'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
              'default_hooks.logger.interval=1']
TINY_EVAL = [f'{split}_dataloader.{k}' for split in ('val', 'test')
             for k in ('dataset.indices=8', 'num_workers=0', 'persistent_workers=False')]
#: What each tool gets appended so that it runs in seconds.
TINY = {
    'train.py': ['--cfg-options', *TINY_TRAIN, *TINY_EVAL],
    'train_distill.py': ['--cfg-options', *TINY_TRAIN, *TINY_EVAL],
    'test.py': ['--cfg-options', *TINY_EVAL[3:]],
    # the grid cut to 2 recipes x 1 seed (argparse keeps the last --recipes/--seeds)
    'compare.py': ['--recipes', 'none', 'kd', '--seeds', '0', '--cfg-options', *TINY_TRAIN,
                   *TINY_EVAL],
    'localization_gap.py': [],
    'export_student.py': [],
    'draw_regions.py': [],
    'browse_dataset.py': [],
}

#: The README and every page under docs/, as paths relative to the repository.
PAGES = ['README.md'] + sorted(p.relative_to(REPO).as_posix()
                               for p in (REPO / 'docs').glob('*.md'))
#: Repository paths named in the text (configs, checkpoints, docs, tools, ...), repo-relative.
NAMED_PATH = re.compile(r'(?<![\w/.-])((?:configs|checkpoints|docs|tools|benchmarks|distill|'
                        r'tests)/[\w./-]+\.(?:py|pth|json|md|csv|png|sh))')
#: Markdown links and images: ``[text](target)`` / ``![alt](target)``.
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')


def read(page: str) -> str:
    return (REPO / page).read_text()


def readme_commands(text: str) -> list[list[str]]:
    """The commands of the marked bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r'<!-- readme-test -->\s*```bash\n(.*?)```', text, flags=re.S):
        for line in block.replace('\\\n', ' ').splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def without_code_blocks(text: str) -> str:
    """The text outside fenced code blocks (code may contain ``[...](...)`` that is no link)."""
    return re.sub(r'^```.*?^```', '', text, flags=re.S | re.M)


def anchors(text: str) -> set[str]:
    """GitHub's anchors of the page's headings: lower case, punctuation dropped, spaces to -,
    a repeated heading suffixed -1, -2, ..."""
    found, counts = set(), {}
    for heading in re.findall(r'^#{1,6}\s+(.+?)\s*#*\s*$', without_code_blocks(text), flags=re.M):
        heading = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', heading)  # a link counts by its text
        slug = re.sub(r'[^\w\- ]', '', heading.lower()).replace(' ', '-')
        n = counts.get(slug, 0)
        counts[slug] = n + 1
        found.add(slug if n == 0 else f'{slug}-{n}')
    return found


PAGES_WITH_COMMANDS = [p for p in PAGES if readme_commands(read(p))]


def test_readme_blocks_are_found_and_use_one_python():
    text = read('README.md')
    commands = readme_commands(text)
    assert len(commands) >= 6
    # one way of calling Python in the whole README
    assert not re.search(r'^\s*python3? tools/', text, flags=re.M)


@pytest.mark.parametrize('page', PAGES)
def test_marked_blocks_are_found_and_use_the_venv_tools(page):
    """Every marked command is ``.venv/bin/python tools/<tool>`` with a tool TINY can shrink."""
    commands = readme_commands(read(page))
    assert all(c[0] == '.venv/bin/python' and c[1].startswith('tools/') for c in commands), \
        [c[:2] for c in commands if c[0] != '.venv/bin/python' or not c[1].startswith('tools/')]
    unknown = sorted({os.path.basename(c[1]) for c in commands} - set(TINY))
    assert not unknown, f'{page}: add these tools to TINY: {unknown}'
    # a block marked but not parsed (a typo in the fence) would silently test nothing
    assert read(page).count('<!-- readme-test -->') == len(
        re.findall(r'<!-- readme-test -->\s*```bash\n', read(page)))


@pytest.mark.parametrize('page', PAGES_WITH_COMMANDS)
def test_marked_commands_run_as_written(page, tmp_path):
    (tmp_path / 'tools').symlink_to(REPO / 'tools')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    for words in readme_commands(read(page)):
        tool = os.path.basename(words[1])
        assert tool in TINY, f'add {tool} to TINY: {words}'
        cmd = [sys.executable, *words[1:], *TINY[tool]]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, (f'{page}: command failed: {shlex.join(words)}\n'
                                      + (proc.stdout + proc.stderr)[-4000:])


def test_shipped_files_named_in_the_readme_exist():
    names = set(NAMED_PATH.findall(read('README.md')))
    assert {'checkpoints/gfl_l_digits_e24_seed0.pth', 'checkpoints/MANIFEST.json',
            'configs/tiny/gfl_s_digits.py'} <= names


@pytest.mark.parametrize('page', PAGES)
def test_files_named_in_the_page_exist(page):
    """Every repository file the page names (configs, checkpoints, docs, tools, ...), as a path
    from the repository root, wherever the page is."""
    names = {n for n in NAMED_PATH.findall(read(page)) if '...' not in n}  # '...': elided
    missing = sorted(n for n in names if not (REPO / n).is_file())
    assert not missing, f'{page} names missing files: {missing}'


@pytest.mark.parametrize('page', PAGES)
def test_relative_links_resolve(page):
    """Every relative Markdown link (and image) of the page points, from the page's folder, to
    an existing file, and its ``#anchor`` (if any) to a heading of the target page."""
    folder = (REPO / page).parent
    broken = []
    for target in LINK.findall(without_code_blocks(read(page))):
        if re.match(r'[a-z][a-z0-9+.-]*:', target):  # http:, https:, mailto:, ...
            continue
        path, _, anchor = target.partition('#')
        file = (folder / path) if path else REPO / page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == '.md' and anchor not in anchors(file.read_text()):
            broken.append(target)
    assert not broken, f'{page} has broken links: {broken}'
