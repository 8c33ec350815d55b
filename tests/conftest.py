"""Test-session fixtures: an isolated dataset cache and the repository paths."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='session', autouse=True)
def data_cache(tmp_path_factory):
    """Embedded datasets are generated once per session into a temporary cache.

    ``DISTILL_TEST_DATA`` may point to a persistent cache instead (faster local reruns).
    """
    root = os.environ.get('DISTILL_TEST_DATA') or str(tmp_path_factory.mktemp('distill-data'))
    old = os.environ.get('DISTILL_DATA')
    os.environ['DISTILL_DATA'] = root
    yield Path(root)
    if old is None:
        os.environ.pop('DISTILL_DATA', None)
    else:
        os.environ['DISTILL_DATA'] = old


@pytest.fixture(scope='session')
def repo():
    return REPO
