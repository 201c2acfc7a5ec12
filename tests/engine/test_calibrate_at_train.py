"""train.calibrate: the engine fits a temperature on the validation split at the end of every run, stores it in
the sidecar and reports every role with it (LDAM's cosine logits otherwise give near-uniform confidences)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fairexpr.config import ConfigError
from fairexpr.engine import fit


def test_temperature_is_fitted_on_val_stored_and_used(cfg_factory, tmp_path):
    cfg = cfg_factory(model={"kwargs": {"head": "normed"}}, loss={"name": "ldam", "kwargs": {"s": 30.0, "max_m": 0.5}})
    res = fit(cfg, tmp_path / "run")
    side = json.loads((tmp_path / "run" / "model.json").read_text())
    cal = side["calibration"]
    t = side["temperature"]
    assert cal["fitted_by"] == "train" and cal["split"] == "val" and cal["n"] == res["eval"]["val"]["n"]
    # T is the NLL-optimal temperature of the stored val logits (T = 1 is a candidate, so NLL cannot rise); the
    # LDAM-specific T << 1 of a converged cosine head is asserted on the shipped model (tests/zoo)
    from fairexpr.evaluation.calibration import fit_temperature

    with np.load(tmp_path / "run" / "eval" / "val" / "predictions.npz") as f:
        assert fit_temperature(f["logits"].astype(np.float64), f["y_true"]) == pytest.approx(t, rel=1e-4)
    assert cal["after"]["nll"] <= cal["before"]["nll"] + 1e-12
    # every role is reported with that temperature: the val figures are the calibration's "after" figures
    for role in ("val", "test"):
        assert res["eval"][role]["temperature"] == pytest.approx(t)
    assert res["eval"]["val"]["ece"] == pytest.approx(cal["after"]["ece"], abs=1e-6)
    assert res["eval"]["val"]["nll"] == pytest.approx(cal["after"]["nll"], rel=1e-4)
    # the stored probabilities are softmax(logits / T) of the deployable network
    with np.load(tmp_path / "run" / "eval" / "test" / "predictions.npz") as f:
        z, p = f["logits"].astype(np.float64), f["probs"].astype(np.float64)
    e = np.exp(z / t - (z / t).max(1, keepdims=True))
    assert np.abs(e / e.sum(1, keepdims=True) - p).max() < 1e-4
    # a predictor on the run uses it
    from fairexpr.inference.predictor import TorchPredictor

    assert TorchPredictor(tmp_path / "run").temperature == pytest.approx(t)


def test_calibrate_false_leaves_logits_alone(cfg_factory, tmp_path):
    res = fit(cfg_factory(train={"calibrate": False, "epochs": 1}), tmp_path / "run")
    side = json.loads((tmp_path / "run" / "model.json").read_text())
    assert side["temperature"] == 1.0 and "calibration" not in side
    assert res["eval"]["test"]["temperature"] == 1.0


def test_calibrate_must_be_a_boolean(cfg_factory):
    with pytest.raises(ConfigError, match=r"train.calibrate.*true or false.*'yes'"):
        cfg_factory(train={"calibrate": "yes"})
