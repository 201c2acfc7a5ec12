import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Root of the shared real datasets (``FAIREXPR_DATA``); skips the test when unavailable."""
    root = os.environ.get("FAIREXPR_DATA")
    if not root:
        pytest.skip("FAIREXPR_DATA is not set; real-data tests need the shared FER datasets")
    p = Path(root)
    if not p.is_dir():
        pytest.skip(f"FAIREXPR_DATA={root!r} is not a directory")
    return p


@pytest.fixture(autouse=True)
def _fast_torch():
    import torch

    # an explicit OMP_NUM_THREADS wins (e.g. 1 on a machine shared with other jobs: two spinning OpenMP
    # threads on two busy cores make every convolution several times slower); else at most 2 threads
    env = os.environ.get("OMP_NUM_THREADS", "")
    torch.set_num_threads(int(env) if env.isdigit() and int(env) > 0 else min(2, os.cpu_count() or 1))
    yield
