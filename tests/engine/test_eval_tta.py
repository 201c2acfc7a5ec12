"""``train.eval_tta: hflip`` in the engine and ``fairexpr eval --tta hflip`` on a checkpoint: both store the mean of
the model's probabilities on each face and its mirror, and agree with each other."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fairexpr.config import ConfigError
from fairexpr.engine import fit, load_model


def test_engine_eval_tta_and_eval_cli(cfg_factory, tmp_path):
    from fairexpr.cli import cli
    from fairexpr.data.augment import normalize, to_float
    from fairexpr.engine.data import build_splits

    with pytest.raises(ConfigError, match="train.eval_tta"):
        cfg_factory(train={"eval_tta": "flip"})
    cfg = cfg_factory(train={"epochs": 1, "eval_tta": "hflip"})
    run = tmp_path / "run"
    res = fit(cfg, run)
    m = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    assert m["tta"] == "hflip" and res["eval"]["test"]["n"] == m["n"]
    pred = np.load(run / "eval" / "test" / "predictions.npz")
    model, side = load_model(run)
    x = normalize(to_float(build_splits(cfg, progress=False)["test"].images), side["preprocess"]["mean"],
                  side["preprocess"]["std"])
    with torch.inference_mode():
        t = float(side.get("temperature", 1.0))  # fitted on val at the end of training (train.calibrate)
        plain = (model(x) / t).softmax(-1)
        mirrored = (model(x.flip(-1)) / t).softmax(-1)
    np.testing.assert_allclose(pred["probs"], ((plain + mirrored) / 2).numpy(), atol=1e-5)
    assert not np.allclose(pred["probs"], plain.numpy(), atol=1e-4), "the mirror must change the prediction"

    # the same checkpoint through `fairexpr eval`: --tta hflip reproduces the engine's numbers, none the plain ones
    data = cfg["data"]
    opts = [f"--option={k}={v}" for k, v in data["test_options"].items()]
    for tta, expect in (("hflip", pred["probs"]), ("none", plain.numpy())):
        r = CliRunner().invoke(cli, ["eval", "--checkpoint", str(run), "--data", data["test"], "--split", data["test_split"],
                                     *opts, "--name", f"cli_{tta}", "--tta", tta, "--json"])
        assert r.exit_code == 0, r.output
        out = json.loads(r.output)
        assert out["tta"] == tta and out["n"] == m["n"]
        got = np.load(run / "eval" / f"cli_{tta}" / "predictions.npz")["probs"]
        np.testing.assert_allclose(got, expect, atol=1e-5)
    assert out["accuracy"] == pytest.approx(float((plain.argmax(1).numpy() == pred["y_true"]).mean()))
    # --tta crops: the mean of the twelve views' calibrated probabilities (fairexpr.evaluation.tta.tta_views)
    from fairexpr.evaluation.tta import tta_views

    r = CliRunner().invoke(cli, ["eval", "--checkpoint", str(run), "--data", data["test"], "--split", data["test_split"],
                                 *opts, "--name", "cli_crops", "--tta", "crops"])
    assert r.exit_code == 0 and "(crop TTA, 12 views)" in r.output, r.output
    with torch.inference_mode():
        crops = torch.stack([(model(v) / t).softmax(-1) for v, _ in tta_views(x, "crops")]).mean(0)
    np.testing.assert_allclose(np.load(run / "eval" / "cli_crops" / "predictions.npz")["probs"], crops.numpy(), atol=1e-5)
    bad = CliRunner().invoke(cli, ["eval", "--checkpoint", str(run), "--data", data["test"], "--tta", "vflip"])
    assert bad.exit_code != 0 and "vflip" in bad.output
