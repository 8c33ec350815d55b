"""The README's commands work as written: each `.venv/bin/python tools/...` command of its
walkthrough blocks runs, in order, from a fresh directory, with tiny iteration counts.

The blocks are the ```bash blocks right after a line ``<!-- readme-test -->``. Each command
runs with this interpreter for ``.venv/bin/python``, from a directory holding only a link to
``tools/`` (configs, recipes and the shipped teacher are found through the package), with
``--cfg-options`` that shrink the data to 8 images (2 iterations an epoch; a compare grid is cut
to 2 recipes and 1 seed), so a drifted file name, flag or path fails here.
"""

import os
import re
import shlex
import subprocess
import sys

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


def readme_commands(text: str) -> list[list[str]]:
    """The commands of the marked bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r'<!-- readme-test -->\s*```bash\n(.*?)```', text, flags=re.S):
        for line in block.replace('\\\n', ' ').splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def test_readme_blocks_are_found_and_use_one_python():
    text = (REPO / 'README.md').read_text()
    commands = readme_commands(text)
    assert len(commands) >= 6
    assert all(c[0] == '.venv/bin/python' and c[1].startswith('tools/') for c in commands), \
        [c[:2] for c in commands if c[0] != '.venv/bin/python']
    # one way of calling Python in the whole README
    assert not re.search(r'^\s*python3? tools/', text, flags=re.M)


def test_readme_commands_run_as_written(tmp_path):
    (tmp_path / 'tools').symlink_to(REPO / 'tools')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    for words in readme_commands((REPO / 'README.md').read_text()):
        tool = os.path.basename(words[1])
        assert tool in TINY, f'add {tool} to TINY: {words}'
        cmd = [sys.executable, *words[1:], *TINY[tool]]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, (f'README command failed: {shlex.join(words)}\n'
                                      + (proc.stdout + proc.stderr)[-4000:])


def test_files_named_in_the_readme_exist():
    """Every repository file the README names (configs, checkpoints, docs, tools, ...)."""
    text = (REPO / 'README.md').read_text()
    names = set(re.findall(r'(?<![\w/.-])((?:configs|checkpoints|docs|tools|benchmarks|distill|'
                           r'tests)/[\w./-]+\.(?:py|pth|json|md|csv|png|sh))', text))
    assert {'checkpoints/gfl_l_digits_e24_seed0.pth', 'checkpoints/MANIFEST.json',
            'configs/tiny/gfl_s_digits.py'} <= names
    missing = sorted(n for n in names if not (REPO / n).is_file())
    assert not missing, missing
