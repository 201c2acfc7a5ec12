"""benchmarks/tta_views.py: its views by hand (the resampling itself is tested in tests/evaluation/test_tta.py),
the prior shift by hand, and the harness end to end on a tiny synthetic-face model (clear errors for bad input)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _bench import load_bench


@pytest.fixture(scope="module")
def tv():
    return load_bench("tta_views")


def test_views(tv):
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(tv.view(x, True, None), x.flip(-1))
    # the top-left half of a 4x4 image upsampled 2 -> 4: rows/cols weighted [1, 0], [.75, .25], [.25, .75], [0, 1]
    v = tv.view(x, False, (0.5, "top-left"))
    r = torch.tensor([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    assert torch.allclose(v[0, 0], r @ torch.tensor([[0.0, 1], [4, 5]]) @ r.T)
    # a mirrored crop = the crop of the mirror (the mirror first, then the box)
    assert torch.allclose(tv.view(x, True, (0.5, "top-left"))[0, 0], r @ torch.tensor([[3.0, 2], [7, 6]]) @ r.T)
    names = tv.view_names([0.9])
    assert len(names) == 12 and names[0] == "full" and names[6] == "full+mirror"
    assert [tv.parse_view(n) for n in ("full", "crop0.9:top-left+mirror")] == [(False, None), (True, (0.9, "top-left"))]
    sets = tv.view_sets([0.9])
    assert sets["hflip"] == ["full", "full+mirror"] and len(sets["ten-crop 0.9"]) == 10
    assert "full" not in sets["ten-crop 0.9"] and len(sets["full + 4 corners 0.9"]) == 10
    assert all(v in names for vs in sets.values() for v in vs)


def test_prior_shift_by_hand(tv):
    p = np.array([[0.5, 0.5], [0.6, 0.4]])
    prior = np.array([0.8, 0.2])
    # tau 1: [.5 * .8, .5 * .2] / .5 = [.8, .2]; [.48, .08] / .56
    np.testing.assert_allclose(tv.prior_shift(p, prior, 1.0), [[0.8, 0.2], [0.48 / 0.56, 0.08 / 0.56]])
    np.testing.assert_allclose(tv.prior_shift(p, prior, 0.0), p)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from fairexpr.config import load_config
    from fairexpr.engine import fit

    root = tmp_path_factory.mktemp("tta")
    syn = {"total": 280, "seed": 1}
    cfg = {"seed": 0,
           "data": {"train": "synthetic:fer2013", "train_split": "train", "train_options": syn,
                    "val": "synthetic:fer2013", "val_split": "val", "val_options": syn,
                    "test": "synthetic:fer2013", "test_split": "test", "test_options": syn,
                    "image_size": 32, "channels": 1, "cache_dir": None},
           "model": {"name": "resnet18", "kwargs": {"small_input": False}},
           "optim": {"name": "sgd", "lr": 0.05},
           "train": {"epochs": 1, "batch_size": 32, "progress": False, "eval_batch_size": 128}}
    fit(load_config(None, extra=cfg), root / "run")
    return root


def test_end_to_end(tv, tiny_run, capsys):
    root = tiny_run
    syn = ["synthetic:fer2013", "total=280", "seed=1"]
    args = ["--checkpoint", str(root / "run"), "--select", "val", syn[0], "val", *syn[1:],
            "--report", "test", syn[0], "test", *syn[1:], "--fractions", "0.9", "--taus", "0", "0.5",
            "--boot", "100", "--out", str(root / "out"), "--results", str(root / "res"), "--tag", "t", "--no-progress"]
    assert tv.main(args) == 0
    res = json.loads((root / "res" / "t.json").read_text())
    meta = res["meta"]
    assert set(res["selection"]) == set(tv.view_sets([0.9])) and meta["winner"] in res["selection"]
    # the selection rows are the mean of the saved per-view probabilities
    z = np.load(root / "out" / "t_val.npz")
    names = list(z["views"])
    p = z["probs"][:, [names.index("full"), names.index("full+mirror")]].mean(1)
    acc = float((p.argmax(1) == z["labels"]).mean())
    assert res["selection"]["hflip"]["accuracy"] == pytest.approx(acc, abs=1e-6)
    none = z["probs"][:, names.index("full")]
    # the "full" view is the model's own calibrated prediction: what `fairexpr eval` computes
    from fairexpr.engine.evaluate import evaluate_checkpoint

    m = evaluate_checkpoint(root / "run", "synthetic:fer2013", "val", options={"total": 280, "seed": 1},
                            out_dir=root / "ev", progress=False)
    np.testing.assert_allclose(np.load(root / "ev" / "predictions.npz")["probs"], none, atol=1e-5)
    assert res["selection"]["none"]["accuracy"] == pytest.approx(m["accuracy"])
    assert [r["tau"] for r in res["prior_shift"]] == [0, 0.5]
    assert res["prior_shift"][0]["accuracy"] == pytest.approx(acc, abs=1e-6)
    if meta["winner"] != "hflip":
        d = res["report"]["test"]
        assert d["diff"]["accuracy"]["lo"] <= d["diff"]["accuracy"]["diff"] <= d["diff"]["accuracy"]["hi"]
    else:
        assert res["report"] == {}
    md = (root / "res" / "t.md").read_text()
    assert "**(winner)**" in md and "| τ | accuracy | balanced |" in md and "python benchmarks/tta_views.py" in md


@pytest.mark.parametrize("extra, msg", [
    (["--fractions", "1.0"], "--fractions: each must be in [0.5, 1), got 1.0"),
    (["--boot", "5"], "--boot must be >= 100"),
    (["--checkpoint", "nope/run"], "--checkpoint nope/run: no such file or folder"),
    (["--select", "x", "y"], "tta_views.py: --select x y: expected NAME FORMAT:PATH SPLIT"),
    (["--report", "t", "synthetic:fer2013", "test", "total"], "tta_views.py: --report t: option 'total' must look like key=value"),
])
def test_bad_input_is_one_clear_error(tv, extra, msg, tmp_path):
    base = ["--select", "v", "synthetic:fer2013", "val", "--report", "t", "synthetic:fer2013", "test",
            "--out", str(tmp_path), "--results", str(tmp_path)]
    with pytest.raises(SystemExit) as e:
        tv.main([*base, *extra])
    assert e.value.code == 2 and msg in str(e.value)


def test_needs_data_or_sets(tv, tmp_path, monkeypatch):
    monkeypatch.delenv("FAIREXPR_DATA", raising=False)
    with pytest.raises(SystemExit, match="give --data"):
        tv.main(["--out", str(tmp_path)])
