"""benchmarks/ensemble.py: the probability average and the paired bootstrap by hand, and the harness end to end on two
tiny synthetic-face models (each member evaluated with its own temperature; clear errors for bad input)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from _bench import load_bench


@pytest.fixture(scope="module")
def ens():
    return load_bench("ensemble")


def test_combine_is_the_weighted_mean_by_hand(ens):
    a = np.array([[0.8, 0.2], [0.4, 0.6]])
    b = np.array([[0.2, 0.8], [0.0, 1.0]])
    # weights 1 : 3 -> 0.25 a + 0.75 b
    np.testing.assert_allclose(ens.combine([a, b], [1, 3]), [[0.35, 0.65], [0.1, 0.9]])
    np.testing.assert_allclose(ens.combine([a, b], [1, 1]), [[0.5, 0.5], [0.2, 0.8]])


def test_paired_bootstrap_by_hand(ens):
    y = np.array([0, 0, 0, 1])
    a = np.array([0, 0, 0, 0])  # accuracy 3/4, balanced (1 + 0) / 2 = 1/2
    b = np.array([0, 0, 1, 1])  # accuracy 3/4, balanced (2/3 + 1) / 2 = 5/6
    r = ens.paired_bootstrap(y, a, b, 2, boot=200, seed=0)
    assert r["accuracy"]["diff"] == pytest.approx(0.0)
    assert r["balanced_accuracy"]["diff"] == pytest.approx(5 / 6 - 1 / 2)
    for m in r.values():
        assert m["lo"] <= m["diff"] <= m["hi"]
    same = ens.paired_bootstrap(y, a, a, 2, boot=100)
    assert all(v == {"diff": 0.0, "lo": 0.0, "hi": 0.0} for v in same.values())
    assert ens.fmt_diff({"diff": 0.0123, "lo": -0.001, "hi": 0.02}) == "+1.23 [-0.10, +2.00]"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from fairexpr.config import load_config
    from fairexpr.engine import fit

    root = tmp_path_factory.mktemp("ens")
    syn = {"total": 420, "seed": 1}
    runs = []
    for seed, model in ((0, "resnet18"), (1, "mobilenet_v2")):  # two families: each its own preprocessing
        cfg = {"seed": seed,
               "data": {"train": "synthetic:fer2013", "train_split": "train", "train_options": syn,
                        "val": "synthetic:fer2013", "val_split": "val", "val_options": syn,
                        "test": "synthetic:fer2013", "test_split": "test", "test_options": syn,
                        "image_size": 32, "channels": 1, "cache_dir": None},
               "model": {"name": model, "kwargs": {"small_input": False}},
               "optim": {"name": "sgd", "lr": 0.05},
               "train": {"epochs": 1, "batch_size": 32, "progress": False, "eval_batch_size": 128}}
        run = root / f"m{seed}"
        fit(load_config(None, extra=cfg), run)
        runs.append(run)
    return root, runs


def test_end_to_end_two_members(ens, two_runs, capsys):
    root, (r0, r1) = two_runs
    syn = ["syn", "synthetic:fer2013", "test", "total=420", "seed=1"]
    args = ["--member", f"a={r0}", "--member", f"b={r1}", "--set", *syn, "--tta", "none", "--boot", "100",
            "--out", str(root / "out"), "--results", str(root / "res"), "--tag", "t"]
    assert ens.main(args) == 0
    res = json.loads((root / "res" / "t.json").read_text())
    s = res["sets"]["syn"]
    assert set(s["rows"]) == {"a", "b", "ensemble"} and set(s["ensemble_minus_member"]) == {"a", "b"}
    # the ensemble row is the mean of the members' saved (calibrated) probabilities
    pa = np.load(root / "out" / "a" / "syn" / "predictions.npz")
    pb = np.load(root / "out" / "b" / "syn" / "predictions.npz")
    y = pa["y_true"]
    acc = float((ens.combine([pa["probs"], pb["probs"]], [1, 1]).argmax(1) == y).mean())
    assert s["rows"]["ensemble"]["accuracy"] == pytest.approx(acc)
    d = s["ensemble_minus_member"]["a"]["accuracy"]
    assert d["diff"] == pytest.approx(acc - s["rows"]["a"]["accuracy"]) and d["lo"] <= d["diff"] <= d["hi"]
    assert res["meta"]["weights"] == {"a": 1.0, "b": 1.0} and res["meta"]["members"]["b"]["model"] == "mobilenet_v2"
    md = (root / "res" / "t.md").read_text()
    assert f"| syn | {len(y)} |" in md and "ensemble − a" in md and "python benchmarks/ensemble.py --member" in md
    # --subsets: every equal-weight subset with the first member, each the mean of its members' saved probabilities
    assert ens.main([*args, "--subsets", "--tag", "ts"]) == 0
    subs = json.loads((root / "res" / "ts.json").read_text())["sets"]["syn"]["subsets"]
    assert [x["members"] for x in subs] == [["a"], ["a", "b"]]
    assert subs[0]["accuracy"] == pytest.approx(s["rows"]["a"]["accuracy"]) and subs[1]["accuracy"] == pytest.approx(acc)
    smd = (root / "res" / "ts_subsets.md").read_text()
    assert "Ranked on **syn**" in smd and "| a + b |" in smd and "| a |" in smd
    # --subsets all: every non-empty subset; --max-train-minutes ranks only those within the members' summed training
    # minutes (each from the run's result.json) and lists the others as over budget
    ma, mb = (json.loads((r / "result.json").read_text())["train_seconds"] / 60 for r in (r0, r1))
    budget = max(ma, mb) * 1.01  # each member alone fits, the pair does not
    assert ma + mb > budget
    assert ens.main([*args, "--subsets", "all", "--max-train-minutes", str(budget), "--tag", "tb"]) == 0
    rb = json.loads((root / "res" / "tb.json").read_text())
    assert [x["members"] for x in rb["sets"]["syn"]["subsets"]] == [["a"], ["b"], ["a", "b"]]
    assert rb["meta"]["train_minutes"] == pytest.approx({"a": ma, "b": mb})
    sa, sb = (x["accuracy"] + x["balanced_accuracy"] for x in rb["sets"]["syn"]["subsets"][:2])
    best = "a" if sa >= sb else "b"  # a tie goes to the earlier subset
    assert rb["meta"]["selected"]["members"] == [best]
    assert rb["meta"]["selected"]["train_minutes"] == pytest.approx(ma if best == "a" else mb)
    bmd = (root / "res" / "tb_subsets.md").read_text()
    assert "| over budget | a + b |" in bmd and f"Selected: **{best}**" in bmd and "1 over that budget" in bmd
    assert ens.subset_order(rb["sets"], rb["meta"]["train_minutes"], None)[1] == []  # no budget: nothing left out
    # weights 1 : 0 -> the ensemble is member a
    assert ens.main([*args, "--weights", "1", "0", "--tag", "t1"]) == 0
    r1 = json.loads((root / "res" / "t1.json").read_text())["sets"]["syn"]
    assert r1["rows"]["ensemble"]["accuracy"] == pytest.approx(r1["rows"]["a"]["accuracy"])
    assert r1["ensemble_minus_member"]["a"]["accuracy"] == {"diff": 0.0, "lo": 0.0, "hi": 0.0}


@pytest.mark.parametrize("extra, msg", [
    ([], "give at least two --member"),
    (["--member", "b=X"], "--member b: --checkpoint X: no such file or folder"),
    (["--member", "a=default"], "--member names must differ"),
    (["--member", "bad"], "expected NAME=CHECKPOINT"),
    (["--member", "b=default", "--weights", "1"], "--weights: one non-negative weight per member (2)"),
    (["--member", "b=default", "--boot", "5"], "--boot must be >= 100"),
    (["--member", "b=default", "--set", "x", "y"], "expected NAME FORMAT:PATH SPLIT"),
    (["--member", "b=default", "--set", "x", "synthetic:fer2013", "test", "total"], "option 'total' must look like key=value"),
    (["--member", "b=default"], "no test set"),
    (["--member", "b=default", "--max-train-minutes", "150"], "--max-train-minutes needs --subsets"),
    (["--member", "b=default", "--subsets", "--max-train-minutes", "0"], "a positive number of minutes"),
])
def test_bad_input_is_one_clear_error(ens, extra, msg, tmp_path):
    with pytest.raises(SystemExit) as e:
        ens.main(["--member", "a=default", *extra, "--out", str(tmp_path), "--results", str(tmp_path)])
    assert e.value.code == 2 and msg in str(e.value)


def test_subset_order_by_hand(ens):
    subs = [{"members": ["a"], "accuracy": 0.60, "balanced_accuracy": 0.50},
            {"members": ["b"], "accuracy": 0.55, "balanced_accuracy": 0.55},       # ties a on the sum: a stays first
            {"members": ["a", "b"], "accuracy": 0.70, "balanced_accuracy": 0.70}]  # best, but 30 + 90 > 100 minutes
    res = {"sel": {"name": "Selection split", "subsets": subs}}
    assert ens.subset_order(res, {"a": 30.0, "b": 90.0}, None) == ([2, 0, 1], [])
    assert ens.subset_order(res, {"a": 30.0, "b": 90.0}, 100.0) == ([0, 1], [2])
    assert ens.select_subset(res, {"a": 30.0, "b": 90.0}, 100.0) == {
        "members": ["a"], "accuracy": 0.60, "balanced_accuracy": 0.50, "train_minutes": 30.0}
    assert ens.select_subset(res, {"a": 30.0, "b": 90.0}, 10.0) is None
    meta = {"train_minutes": {"a": 30.0, "b": 90.0}, "max_train_minutes": 10.0, "subsets": "all", "selected": None,
            "date": "d", "tta": "none", "command": "c"}
    md = ens.subsets_markdown(meta, res)  # nothing fits: said, not silently left out
    assert "Selected: **none** — every subset is over the 10-minute budget." in md and md.count("| over budget |") == 3


def test_member_train_minutes(ens, two_runs):
    root, (r0, _) = two_runs
    sec = json.loads((r0 / "result.json").read_text())["train_seconds"]
    assert ens.member_train_minutes(str(r0), {}) == pytest.approx(sec / 60)
    assert ens.member_train_minutes(str(r0 / "model.safetensors"), {}) == pytest.approx(sec / 60)
    assert ens.member_train_minutes(str(root), {}) is None
    assert ens.member_train_minutes(str(root), {"zoo": {"train": {"train_minutes": 12.5}}}) == 12.5


def test_members_with_other_classes_are_refused(ens, two_runs, tmp_path):
    import shutil

    root, (r0, _) = two_runs
    other = tmp_path / "other"
    shutil.copytree(r0, other)
    side = json.loads((other / "model.json").read_text())
    side["classes"] = side["classes"][::-1]
    (other / "model.json").write_text(json.dumps(side))
    with pytest.raises(SystemExit, match="classes .* differ from a's"):
        ens.main(["--member", f"a={r0}", "--member", f"b={other}", "--set", "syn", "synthetic:fer2013", "test",
                  "--out", str(tmp_path / "o"), "--results", str(tmp_path / "r")])


def test_budget_needs_every_members_training_time(ens, two_runs, tmp_path):
    import shutil

    root, (r0, r1) = two_runs
    other = tmp_path / "noresult"
    shutil.copytree(r1, other)
    (other / "result.json").unlink()
    with pytest.raises(SystemExit, match=r"no training time recorded for member\(s\) \['b'\]") as e:
        ens.main(["--member", f"a={r0}", "--member", f"b={other}", "--set", "syn", "synthetic:fer2013", "test",
                  "--subsets", "all", "--max-train-minutes", "150", "--out", str(tmp_path / "o"),
                  "--results", str(tmp_path / "r")])
    assert e.value.code == 2
