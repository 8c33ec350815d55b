"""Fixtures of the ops tests."""

import pytest

from distill.ops.point_sample import _state


@pytest.fixture
def compiled_runs():
    """Fails the test if a call fell back to the reference (the fallback sets the warn-once
    flag), so a silent fallback cannot make the compiled-vs-reference comparisons vacuous."""
    previous = _state['warned']
    _state['warned'] = False
    yield
    fell_back = _state['warned']
    _state['warned'] = previous
    assert not fell_back, 'point_sample fell back to the reference instead of the compiled op'
