"""Every recipe in configs/ loads and validates, and names a registered model, method, loss and sampler —
so a typo or a renamed registry entry fails here, not an hour into a benchmark."""
from __future__ import annotations

from pathlib import Path

import pytest

from fairexpr.config import load_config
from fairexpr.losses import list_losses
from fairexpr.methods import list_methods
from fairexpr.models import list_models

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_configs_found():
    assert len(CONFIGS) >= 20 and any(p.name == "mobilenet_ldam_long_cpu.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_recipe_loads_and_names_registered_parts(path, monkeypatch):
    monkeypatch.setenv("FAIREXPR_DATA", "/data")
    cfg = load_config(path)
    assert cfg["model"]["name"] in list_models(), cfg["model"]["name"]
    assert cfg["method"]["name"] in list_methods(), cfg["method"]["name"]
    assert cfg["loss"]["name"] in list_losses(), cfg["loss"]["name"]
    for role in ("train", "val", "test", "target", "target_eval", "unlabelled"):
        spec = cfg["data"].get(role)
        assert spec is None or "${" not in str(spec), f"{role}: unexpanded variable in {spec!r}"
