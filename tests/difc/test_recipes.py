"""Every DIFC recipe (paper-sized, CPU-sized, MobileNetV2 benchmark) loads and validates, and the paper-sized
ones build the authors' network: the AGRA global+local head on IR-50."""
from __future__ import annotations

from pathlib import Path

import pytest

from fairexpr.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("difc_*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_difc_recipes_load(path, monkeypatch):
    monkeypatch.setenv("FAIREXPR_DATA", "/data")
    cfg = load_config(str(path), [])
    assert cfg["method"]["name"] in ("mcd", "dann", "safn")
    assert cfg["method"]["cls_loss"] in ("ce", "di", "difc")
    if path.stem.endswith("_dlib"):  # the GPU run's recipe (benchmarks/gpu/run.sh): 112 px on the face backbone
        t = cfg["train"]
        assert cfg["data"]["image_size"] == 112 and cfg["model"]["name"] == "dlib_resnet29"
        assert cfg["model"]["pretrained"] == "dlib" and t["iters_per_epoch"] and 0 < cfg["method"]["t1_epochs"] < t["epochs"]
    elif "_cpu" not in path.stem:  # paper-sized: 112 px, 20 + 20 epochs, the AGRA head
        assert cfg["data"]["image_size"] == 112 and cfg["method"]["t1_epochs"] == 20 and cfg["train"]["epochs"] == 40
        assert cfg["model"]["name"] == "agra_net" and cfg["model"]["kwargs"]["backbone"] == "ir50"
    if "mobilenet" in path.stem:
        t = cfg["train"]
        assert t["iters_per_epoch"] and cfg["method"]["t1_epochs"] < t["epochs"] and t["budget_clock"] == "process"


def test_paper_recipe_builds_agra_on_ir50(monkeypatch):
    import torch

    from fairexpr.labels import CANONICAL7
    from fairexpr.methods.base import DataInfo, get_method

    monkeypatch.setenv("FAIREXPR_DATA", "/data")
    cfg = load_config(str(CONFIGS[0].parent / "difc_mcd.yaml"), ["model.kwargs.crop_width=8"])
    m = get_method("mcd")(cfg, DataInfo(classes=CANONICAL7, class_counts=[10] * 7, in_chans=3, image_size=112))
    assert type(m.model.backbone).__name__ == "AGRANet" and m.model.num_features == 384
    m.eval()
    assert m.predict(torch.randn(1, 3, 112, 112))["probs"].shape == (1, 7)
