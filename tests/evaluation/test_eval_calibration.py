"""Temperature scaling and reliability data."""
import math
import warnings

import numpy as np
import pytest
import torch

from fairexpr.evaluation.calibration import (
    apply_temperature,
    calibration_summary,
    fit_temperature,
    reliability_diagram,
    softmax,
    temperature_nll,
)
from fairexpr.evaluation.metrics import expected_calibration_error


def _calibrated_logits(n=4000, k=7, seed=0):
    """Logits z and labels sampled from softmax(z): perfectly calibrated at T = 1."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, k))
    p = softmax(z)
    y = np.array([rng.choice(k, p=row) for row in p])
    return z, y


def test_scaled_logits_recover_temperature():
    z, y = _calibrated_logits()
    t = fit_temperature(3.0 * z, y)  # over-confident by a factor 3
    assert t == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(z, y) == pytest.approx(1.0, rel=0.1)
    assert fit_temperature(torch.from_numpy(3.0 * z).float(), torch.from_numpy(y)) == pytest.approx(t, rel=1e-3)


def test_fit_is_nll_minimum_and_ece_improves():
    z, y = _calibrated_logits(seed=1)
    over = 4.0 * z
    t = fit_temperature(over, y)
    best = temperature_nll(over, y, t)
    for f in (0.8, 1.25):
        assert temperature_nll(over, y, t * f) > best
    before = expected_calibration_error(softmax(over), y)
    after = expected_calibration_error(softmax(apply_temperature(over, t)), y)
    assert after < before / 2
    s = calibration_summary(over, y, t)
    assert s["after"]["ece"] == pytest.approx(after) and s["before"]["ece"] == pytest.approx(before)
    assert s["after"]["nll"] < s["before"]["nll"]
    assert sum(s["reliability_after"]["count"]) == len(y)


def test_temperature_nll_hand_computed():
    z = np.array([[2.0, 0.0]])
    # T = 2: softmax([1, 0])_0 = e / (e + 1)
    assert temperature_nll(z, [0], 2.0) == pytest.approx(-math.log(math.e / (math.e + 1)))


def test_apply_temperature_keeps_type_and_argmax():
    zt = torch.tensor([[1.0, 3.0, -2.0]])
    out = apply_temperature(zt, 2.0)
    assert isinstance(out, torch.Tensor) and torch.allclose(out, zt / 2)
    zn = apply_temperature(np.array([[1.0, 3.0, -2.0]]), 0.5)
    assert isinstance(zn, np.ndarray) and zn.argmax() == 1
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="T > 0"):
            apply_temperature(zt, bad)


def test_separable_data_hits_bound_with_warning():
    z = np.array([[5.0, -5.0], [-5.0, 5.0]] * 10)
    y = np.array([0, 1] * 10)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        t = fit_temperature(z, y)
    assert t == pytest.approx(0.01, rel=1e-3)
    assert any("search bound" in str(x.message) for x in w)


def test_reliability_diagram_json_ready():
    rel = reliability_diagram(np.array([[0.9, 0.1], [0.6, 0.4]]), [0, 1])
    assert len(rel["edges"]) == 16 and len(rel["count"]) == 15
    assert rel["accuracy"][0] is None  # empty bin -> null
    assert rel["ece"] == pytest.approx((0.1 + 0.6) / 2)


@pytest.mark.parametrize("z,y,match", [
    (np.zeros((3,)), [0, 1, 2], "2-D"),
    (np.array([[np.inf, 0.0]]), [0], "NaN or inf"),
    (np.zeros((2, 3)), [0], "2 labels"),
    (np.zeros((2, 3)), [0, 5], "labels"),
])
def test_fit_temperature_bad_input(z, y, match):
    with pytest.raises(ValueError, match=match):
        fit_temperature(z, y)
