"""benchmarks/calibration.py: ECE at T = 1 and at the run's fitted T, by hand, per role; excluded images counted;
bad groups are one-line errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from _bench import load_bench


@pytest.fixture(scope="module")
def cal():
    return load_bench("calibration")


def _run(path, temperature, roles):
    path.mkdir(parents=True)
    (path / "model.json").write_text(json.dumps({"temperature": temperature}))
    for role, (logits, y) in roles.items():
        (path / "eval" / role).mkdir(parents=True)
        np.savez(path / "eval" / role / "predictions.npz", logits=np.asarray(logits, dtype=np.float32),
                 y_true=np.asarray(y), probs=np.zeros((len(y), 2)))
    return path


def test_ece_before_and_after_by_hand(cal, tmp_path):
    z = [[0.0, math.log(3.0)]] * 4 + [[0.0, 0.0]]  # softmax = (1/4, 3/4) at T = 1
    y = [1, 1, 1, 0, -1]  # 3 of 4 labelled right; the last image has no label in the model's classes
    run = _run(tmp_path / "r", 0.5, {"test": (z, y), "val": (z[:4], y[:4])})
    c = cal.run_calibration(run)
    assert list(c) == ["val", "test"]  # val (where T was fitted) first
    t = c["test"]
    assert t["n"] == 4 and t["excluded"] == 1 and t["temperature"] == 0.5
    assert t["ece_before"] == pytest.approx(0.0, abs=1e-6)  # confidence 0.75 = accuracy 0.75
    # T = 0.5: softmax(z / T) = (1/10, 9/10): confidence 0.9 vs accuracy 0.75 -> ECE 0.15
    assert t["ece_after"] == pytest.approx(0.15, abs=1e-6)
    rows = cal.group_table({"g": [run, _run(tmp_path / "r2", 1.0, {"test": (z, y)})]})
    test = next(r for r in rows if r["role"] == "test")
    assert test["runs"] == 2 and test["images"] == "4 (+1 excluded)" and test["T (range)"] == "0.5–1"
    assert test["ECE T=1 % (worst)"] == "0.0 (0.0)" and test["ECE fitted T % (worst)"] == "7.5 (15.0)"
    assert test["≤ 5 %"] == "1/2"


def test_main_writes_results_and_refuses_bad_groups(cal, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cal, "ROOT", tmp_path)
    _run(tmp_path / "runs" / "a_s0", 1.0, {"test": ([[0.0, 1.0]] * 2, [1, 0])})
    (tmp_path / "configs").mkdir()
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / "configs" / name).write_text("seed: 0\n")
    assert cal.main(["--group", "configs/a.yaml=runs/a_*", "--results-dir", str(tmp_path / "res"), "--tag", "t"]) == 0
    res = json.loads((tmp_path / "res" / "t.json").read_text())
    assert res["meta"]["runs"] == {"configs/a.yaml": ["runs/a_s0"]} and res["rows"][0]["role"] == "test"
    assert res["meta"]["recipes_not_measured"] == ["configs/b.yaml"]  # listed, not silently dropped
    md = (tmp_path / "res" / "t.md").read_text()
    assert "| configs/a.yaml | test | 1 |" in md and "(1 of 2 in configs/): `configs/b.yaml`" in md
    with pytest.raises(SystemExit, match="no finished run .* matches 'runs/none_\\*'"):
        cal.main(["--group", "B=runs/none_*", "--results-dir", str(tmp_path / "res")])
    with pytest.raises(SystemExit, match="expected LABEL=RUN_GLOB"):
        cal.main(["--group", "runs/a_*", "--results-dir", str(tmp_path / "res")])


def test_class_bias_analysis_by_hand(cal, tmp_path):
    # two groups of images: z = (0, 1) with labels 1,1,1,0 and z = (0, -1) with labels 1,1,1,0,0. The saturated
    # optimum of softmax(z / T + b) gives p1 = 3/4 and 3/5: 1/T + b1 = log 3, -1/T + b1 = log 1.5
    # -> T = 2 / log 2 = 2.885, b1 = (log 3 + log 1.5) / 2 = 0.752; ECE 0 on this set.
    z = [[0.0, 1.0]] * 4 + [[0.0, -1.0]] * 5
    y = [1, 1, 1, 0, 1, 1, 1, 0, 0]
    t, b = cal.fit_temperature_bias(np.asarray(z), np.asarray(y))
    assert t == pytest.approx(2 / math.log(2), rel=1e-3) and b == pytest.approx([0.0, 0.752], abs=1e-3)
    run = _run(tmp_path / "r", 1.0, {"val": (z, y), "test": (z, y)})
    c = cal.run_calibration(run, class_bias=True)["test"]
    assert c["ece_bias"] == pytest.approx(0.0, abs=1e-4)
    # the second group flips from class 0 to class 1: accuracy 5/9 -> 6/9; recalls (1/2, 2/3) -> (1, 0):
    # balanced accuracy 7/12 -> 1/2
    assert c["d_accuracy"] == pytest.approx(1 / 9) and c["d_balanced"] == pytest.approx(-1 / 12)
    rows = cal.group_table({"g": [run, _run(tmp_path / "noval", 1.0, {"test": (z, y)})]}, class_bias=True)
    test = next(r for r in rows if r["role"] == "test")
    assert test["ECE T+bias % (worst)"] == "0.0 (0.0)" and test["Δ acc / Δ bal (points)"] == "+11.1 / -8.3"
    assert "ECE T+bias % (worst)" not in cal.group_table({"g": [run]})[0]  # the analysis only when asked
