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

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
