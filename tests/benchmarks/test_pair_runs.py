"""benchmarks/pair_runs.py: two runs files paired cell by cell and seed by seed (B − A, 95 % t interval, verdict);
hand-computed intervals, the meta settings that differ, cells and seeds one file lacks listed, bad input -> exit 2
with one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from _bench import load_bench

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pr():
    return load_bench("pair_runs")


def _runs(path, records, epochs=18, nested=False):
    recs = []
    for rb, seed, acc, bal in records:
        r = {"run": f"runs/{rb}_s{seed}_{epochs}", "dataset": "fer2013", "rb": rb, "seed": seed, "epochs_run": epochs,
             "stopped_by": "epochs"}
        r |= {"metrics": {"accuracy": acc, "balanced_accuracy": bal}} if nested else {"accuracy": acc,
                                                                                     "balanced_accuracy": bal}
        recs.append(r)
    meta = {"budget": {"epochs": epochs, "clock": "process"}, "command": f"python x.py --epochs {epochs}",
            "date": "2026-12-07", "wall_minutes": 0.1}
    path.write_text(json.dumps({"meta": meta, "runs": recs}))
    return path


A = [("mlp", 0, 0.50, 0.40), ("mlp", 1, 0.60, 0.50), ("mlp", 2, 0.70, 0.60),
     ("rb", 0, 0.50, 0.50), ("rb", 1, 0.50, 0.50), ("rb", 2, 0.50, 0.50)]
B = [("mlp", 0, 0.52, 0.40), ("mlp", 1, 0.61, 0.50), ("mlp", 2, 0.74, 0.60),
     ("rb", 0, 0.51, 0.49), ("rb", 1, 0.511, 0.489), ("rb", 2, 0.509, 0.491)]


def test_hand_computed_intervals_per_cell(pr, tmp_path, capsys):
    a, b = _runs(tmp_path / "a.json", A), _runs(tmp_path / "b.json", B, epochs=24, nested=True)
    rep = pr.pair_runs(a, b)
    assert rep["by"] == ["dataset", "rb"]  # run (the folder) and stopped_by (an outcome) are not cell keys
    rows = {(r["cell"]["rb"], r["metric"]): r for r in rep["rows"]}
    # mlp accuracy: differences +2, +1, +4 points; mean 7/3; sd sqrt(7/3) = 1.5275; t(0.975, 2) = 4.3027;
    # half-width 4.3027 * 1.5275 / sqrt(3) = 3.7946 -> [-1.46, +6.13]
    m = rows[("mlp", "accuracy")]
    assert m["n"] == 3 and m["difference"] == pytest.approx(7 / 300)
    assert m["ci"][0] == pytest.approx(-0.014613, abs=1e-5) and m["ci"][1] == pytest.approx(0.061279, abs=1e-5)
    assert m["verdict"] == "not shown" and m["text"] == "+2.33 [-1.46, +6.13] (n=3)"
    assert m["per_seed"] == pytest.approx({"0": 0.02, "1": 0.01, "2": 0.04})
    assert m["mean_a"] == pytest.approx(0.6) and m["mean_b"] == pytest.approx(0.6233333)
    # rb accuracy: +1.0, +1.1, +0.9 points; sd 0.1; half 4.3027 * 0.1 / sqrt(3) = 0.2484 -> [+0.75, +1.25]: B > A
    r = rows[("rb", "accuracy")]
    assert r["ci"][0] == pytest.approx(0.007516, abs=1e-5) and r["verdict"] == "B > A shown"
    # rb balanced: -1.0, -1.1, -0.9 -> B < A
    assert rows[("rb", "balanced_accuracy")]["verdict"] == "B < A shown"
    # mlp balanced: identical -> zero interval, not shown
    assert rows[("mlp", "balanced_accuracy")]["ci"] == pytest.approx([0.0, 0.0])
    # what changed between the grids: the budget, not the command, date or wall time
    assert rep["changes"] == ["budget.epochs: 18 -> 24"]

    assert pr.main([str(a), str(b), "--out", str(tmp_path / "cmp.e18_vs_e24")]) == 0
    out = capsys.readouterr().out
    assert "`budget.epochs: 18 -> 24`" in out and "the same in every cell: dataset=fer2013" in out
    assert "| rb=mlp | accuracy | 60.00 | 62.33 | +2.33 [-1.46, +6.13] (n=3) | not shown | s0: +2.00, s1: +1.00, s2: +4.00 | – |" in out
    assert (tmp_path / "cmp.e18_vs_e24.md").read_text() == out
    assert json.loads((tmp_path / "cmp.e18_vs_e24.json").read_text())["rows"][0]["n"] == 3


def test_unpaired_seeds_and_cells_are_listed_not_dropped(pr, tmp_path, capsys):
    a = _runs(tmp_path / "a.json", A + [("mlp", 3, 0.55, 0.45)])
    b = _runs(tmp_path / "b.json", [x for x in B if x[1] != 1] + [("anchors", 0, 0.5, 0.5)])
    rep = pr.pair_runs(a, b, by=["rb"])
    m = next(r for r in rep["rows"] if r["cell"] == {"rb": "mlp"} and r["metric"] == "accuracy")
    assert m["n"] == 2 and m["only_a"] == [1, 3] and m["only_b"] == []
    assert rep["only_in_b"] == [{"rb": "anchors"}] and rep["only_in_a"] == []
    assert rep["changes"] == []
    assert pr.main([str(a), str(b), "--by", "rb"]) == 0
    out = capsys.readouterr().out
    assert "| A: 1, 3 |" in out and "Cell only in B (not paired): rb=anchors" in out
    # a cell whose seeds do not meet at all says so instead of failing
    c = _runs(tmp_path / "c.json", [("mlp", 7, 0.5, 0.5)])
    rep = pr.pair_runs(a, c, by=["rb"])
    assert [r["verdict"] for r in rep["rows"]] == ["no seed in common"] * 2


def test_committed_runs_file_paired_with_itself(pr):
    f = ROOT / "benchmarks/results/grefel_dlib_datainit_clean_e18_s40-49_runs.json"
    rep = pr.pair_runs(f, f, by=["rb"])
    assert len(rep["rows"]) == 4 and rep["changes"] == []
    for r in rep["rows"]:
        assert r["n"] == 10 and r["difference"] == 0.0 and r["ci"] == [0.0, 0.0] and r["verdict"] == "not shown"


@pytest.mark.parametrize("content,args,msg", [
    (None, [], "not found"),
    ("{not json", [], "not readable as JSON"),
    (json.dumps([1, 2]), [], "expected an object with a 'runs' list"),
    (json.dumps({"runs": []}), [], "'runs' is empty"),
    (json.dumps({"runs": [{"rb": "mlp", "accuracy": 0.5}]}), [], "runs[0].seed must be an integer"),
    (json.dumps({"runs": [{"rb": "mlp", "seed": 0, "accuracy": 0.5}]}), [], "has no number 'balanced_accuracy'"),
    (json.dumps({"runs": [{"rb": "mlp", "seed": 0, "accuracy": 0.5, "balanced_accuracy": 0.5}]}), ["--by", "noise"],
     "runs[0] has no field 'noise'"),
    (json.dumps({"runs": [{"rb": "mlp", "seed": 0, "accuracy": 0.5, "balanced_accuracy": 0.5, "n": "a"},
                          {"rb": "mlp", "seed": 0, "accuracy": 0.6, "balanced_accuracy": 0.5, "n": "b"}]}),
     ["--by", "rb"], "seed 0 appears twice in the cell {'rb': 'mlp'}"),
])
def test_bad_input_is_one_line(pr, tmp_path, capsys, content, args, msg):
    good = _runs(tmp_path / "good.json", A)
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    assert pr.main([str(bad), str(good), *args]) == 2  # bad as A: it is read and keyed first
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and msg in err and str(bad) in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.md"))


def test_cucn_results_tree_is_read_as_runs(pr, tmp_path):
    """cucn.py writes datasets.<dataset>.rows.<row>.<seed> with the metrics under 'test'."""
    def tree(accs, budget):
        return {"meta": {"budget": budget, "command": "c"}, "datasets": {"ferplus": {"claims": [], "rows": {
            "cbam_weights": {str(s): {"run": f"r{s}", "stopped_by": "epochs",
                                      "test": {"accuracy": a, "balanced_accuracy": a - 0.1}} for s, a in accs.items()}}}}}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(tree({0: 0.70, 1: 0.72, 2: 0.74}, "18 epochs")))
    b.write_text(json.dumps(tree({0: 0.71, 1: 0.74, 2: 0.77}, "24 epochs")))
    rep = pr.pair_runs(a, b)
    assert rep["by"] == ["dataset", "row"] and rep["changes"] == ["budget: '18 epochs' -> '24 epochs'"]
    r = rep["rows"][0]
    assert r["cell"] == {"dataset": "ferplus", "row": "cbam_weights"} and r["per_seed"] == pytest.approx(
        {"0": 0.01, "1": 0.02, "2": 0.03})
    # +1, +2, +3 points: sd 1, half-width 4.3027 / sqrt(3) = 2.4842 -> [-0.48, +4.48]
    assert r["text"] == "+2.00 [-0.48, +4.48] (n=3)"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"datasets": {"ferplus": {"rows": {"cucn": {"zero": {}}}}}}))
    with pytest.raises(ValueError, match=r"bad.json: datasets.ferplus.rows.cucn.zero: expected a seed number"):
        pr.pair_runs(bad, a)


def test_committed_cucn_schedule_change(pr):
    """The 18 -> 24 epoch change of the clean FER+ mixing cell, as README states it (baseline -0.83 accuracy)."""
    rep = pr.pair_runs(ROOT / "benchmarks/results/cucn_dlib_ferplus_mix_e18.json",
                       ROOT / "benchmarks/results/cucn_dlib_ferplus_mix_e24.json")
    rows = {(r["cell"]["row"], r["metric"]): r["text"] for r in rep["rows"]}
    assert rows[("cbam_weights", "accuracy")] == "-0.83 [-1.15, -0.51] (n=3)"
    assert rows[("cucn", "accuracy")] == "+2.03 [-1.14, +5.20] (n=3)"
    assert any(c.startswith("budget: '18 epochs") for c in rep["changes"])


def test_meta_changes_flatten_dicts_and_lists_of_dicts(pr):
    a = {"budget": {"settings": [{"epochs": 8, "runs": 30}]}, "seeds": [0, 1], "command": "x", "tag": "a"}
    b = {"budget": {"settings": [{"epochs": 16, "runs": 30}]}, "seeds": [0, 1, 2], "command": "y", "tag": "b",
         "init": "fer"}
    assert pr.meta_changes(a, b) == ["budget.settings.0.epochs: 8 -> 16", "seeds: [0, 1] -> [0, 1, 2]",
                                     "init: (absent) -> 'fer'"]
