"""The configs/*_dlib_cpu.yaml recipes train (2 steps on synthetic faces) from dlib's face-recognition weights."""
from __future__ import annotations

from pathlib import Path

import pytest

from fairexpr.config import load_config
from fairexpr.engine.loop import Engine
from fairexpr.models.dlib_resnet import DlibResNet29
from fairexpr.models import dlib_resnet as DR
from fairexpr.models.registry import ModelError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SYN = "synthetic:fer2013"

try:
    DR.dlib_model_file()
    HAVE = True
except ModelError:
    HAVE = False


@pytest.mark.skipif(not HAVE, reason="face_recognition_models not installed (pip install 'fairexpr[faces]')")
@pytest.mark.parametrize("recipe", ["ldam_drw_dlib_cpu.yaml", "cucn_dlib_cpu.yaml", "grefel_dlib_cpu.yaml",
                                    "face2exp_dlib_cpu.yaml", "default_model_dlib_cpu.yaml"])
def test_dlib_recipe_trains_from_the_face_weights(recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("FAIREXPR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAIREXPR_DATA", str(tmp_path / "unused"))
    extra = {"data": {"train": SYN, "train_split": "train", "train_options": {"total": 280, "seed": 1, "size": 64},
                      "val": None, "test": None, "test_split": None, "unlabelled": None, "label_fraction": 1.0},
             "train": {"epochs": 1, "iters_per_epoch": 2, "batch_size": 28 if "grefel" in recipe else 16,
                       "max_minutes": None, "progress": False, "eval_batch_size": 64}}
    if "face2exp" in recipe:
        extra["data"]["unlabelled"] = SYN
        extra["data"]["unlabelled_options"] = {"total": 140, "seed": 7, "size": 64}
    cfg = load_config(CONFIGS / recipe, extra=extra)
    eng = Engine(cfg, tmp_path / "run")
    res = eng.run()
    assert res["steps"] == 2
    nets = [m for m in eng.method.modules() if isinstance(m, DlibResNet29)]
    assert nets and all(isinstance(n.load_report, dict) and n.load_report["source"].endswith(DR.DAT_NAME) for n in nets)
