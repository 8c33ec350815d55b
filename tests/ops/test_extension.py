"""The build of ``distill._C`` itself: every op registered, and its CPU loops really parallel."""

import pytest
import torch

from distill.ops.point_sample import compiled_available

needs_ext = pytest.mark.skipif(not compiled_available('cpu'),
                               reason='distill._C is not built (DISTILL_NO_EXT=1 or no build)')


@needs_ext
def test_every_op_is_registered():
    for op in ('point_sample_cols', 'point_sample_cols_backward', 'point_sample_sum',
               'point_sample_sum_backward', 'focal_neg_sum', 'gmm_split'):
        assert hasattr(torch.ops.distill, op), op


@needs_ext
def test_parallel_for_runs_on_torch_threads():
    """at::parallel_for in our kernels is an inline OpenMP region: built without -fopenmp, it
    ran every CPU kernel on one thread whatever torch.get_num_threads() said (until
    2026-12-04). One parallel_for over 64 items uses exactly the threads torch is given."""
    from distill import _C
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            assert _C.parallel_threads(64) == threads
    finally:
        torch.set_num_threads(previous)
