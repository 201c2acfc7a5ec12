"""The GReFEL CPU recipe from the CLI on real faces (CK+48, 981 images): trains, selects, evaluates and writes
a checkpoint that rebuilds the reliability-balanced network with its learnt anchors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fairexpr import checkpoint as ck

ROOT = Path(__file__).resolve().parents[2]


def test_cli_trains_the_grefel_cpu_recipe_on_real_faces(real_data, tmp_path):
    from click.testing import CliRunner

    from fairexpr.cli import cli

    root = real_data / "ckplus" / "CK+48"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    out = tmp_path / "run"
    args = ["train", "--config", str(ROOT / "configs" / "grefel_cpu.yaml"), "--out", str(out), "--json",
            f"data.train=ckplus:{root}", "data.train_split=all", "data.val=holdout:0.2", "data.test=null",
            "train.epochs=1", "train.max_minutes=null", "train.batch_size=32", "train.progress=false",
            "data.label_noise=0.1", "data.label_noise_kind=symmetric"]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    result = json.loads((out / "result.json").read_text())
    assert result["epochs_run"] == 1 and result["steps"] >= 10
    hist = result["history"][0]
    for k in ("train_l_cls", "train_l_anchor", "train_l_center"):
        assert k in hist and torch.isfinite(torch.tensor(hist[k])), k
    val = json.loads((out / "eval" / "val" / "metrics.json").read_text())
    assert val["n"] == result["eval"]["val"]["n"] > 150  # 20 % of 981, stratified
    assert set(val["per_class_accuracy"]) == set(val["classes"]) and "contempt" in val["classes"]
    model, side = ck.load_model(out)
    assert side["model"]["name"] == "reliability_balanced" and side["method"] == "grefel"
    assert side["config"]["data"]["label_noise"] == 0.1
    anchors = model.rb_head.anchors.anchors
    assert anchors.shape[:2] == (8, 10)  # K = 10 anchors for each of CK+'s 8 classes
    p = model(torch.rand(3, 1, 48, 48)).softmax(-1)
    assert torch.allclose(p.sum(-1), torch.ones(3), atol=1e-5)
