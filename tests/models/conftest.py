import os

import pytest


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` in tests/models run only with ``FAIREXPR_SLOW=1`` (CPU budget of the suite)."""
    if os.environ.get("FAIREXPR_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow model test; set FAIREXPR_SLOW=1 to run")
    for item in items:
        if "tests/models/" in str(item.fspath).replace("\\", "/") and "slow" in item.keywords:
            item.add_marker(skip)
