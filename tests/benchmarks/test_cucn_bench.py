"""benchmarks/cucn.py: the paired claims (hand-computed), the rows per recipe, and the harness end to end on synthetic
faces (two shards, then --collect; finished cells are reused, never re-run)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from _bench import load_bench


@pytest.fixture(scope="module")
def cucn():
    return load_bench("cucn")


def _m(acc, bal, gap):
    return {"accuracy": acc, "balanced_accuracy": bal, "per_class_accuracy_gap": gap}


def test_claims_table_by_hand(cucn):
    cells = {"plain_ce": {0: _m(0.60, 0.50, 0.70), 1: _m(0.62, 0.52, 0.72), 2: _m(0.61, 0.51, 0.74)},
             "plain_weights": {0: _m(0.58, 0.55, 0.50), 1: _m(0.60, 0.56, 0.54), 2: _m(0.59, 0.57, 0.52)},
             "cbam_weights": {0: _m(0.59, 0.56, 0.5), 1: _m(0.59, 0.55, 0.5), 2: _m(0.61, 0.58, 0.5)},
             "cucn": {0: _m(0.59, 0.56, 0.5), 2: _m(0.60, 0.57, 0.5)}}
    rows = cucn.claims_table(cells, noise=0.2)
    gap = next(r for r in rows if r["metric"] == "per_class_accuracy_gap")
    # differences -0.20, -0.18, -0.22: mean -0.20, sd 0.02, t(0.975, 2) = 4.3027 -> half 4.3027 * 0.02 / sqrt(3)
    half = 4.302653 * 0.02 / math.sqrt(3) * 100
    assert gap["B − A [95 % CI] (points)"] == f"-20.00 [{-20 - half:+.2f}, {-20 + half:+.2f}] (n=3)"
    assert gap["verdict"] == "**reproduced**" and gap["A"] == "72.00" and gap["B"] == "52.00"  # lower is the claim
    cbam_acc = next(r for r in rows if r["claim"].startswith("CBAM") and r["metric"] == "accuracy")
    assert cbam_acc["B − A [95 % CI] (points)"].startswith("+0.67 [") and cbam_acc["verdict"] == "not shown"
    mix = [r for r in rows if r["claim"].startswith("mixing")]
    assert mix[0]["claim"] == "mixing helps under 20 % symmetric label noise"
    assert mix[0]["B − A [95 % CI] (points)"].endswith("(n=2)")  # paired on the shared seeds 0 and 2 only
    assert mix[0]["A"] == "60.00" and mix[0]["B"] == "59.50"
    # the claimed direction decides: accuracy lower under weights would be "opposite shown" for a "higher" claim
    worse = {"plain_weights": cells["plain_weights"], "cbam_weights": {s: _m(m["accuracy"] - 0.05, 0, 0) for s, m in
                                                                        cells["plain_weights"].items()}}
    r = next(r for r in cucn.claims_table(worse, 0.0) if r["metric"] == "accuracy")
    assert r["verdict"] == "opposite shown" and "noise" not in r["claim"]


def test_rows_per_recipe(cucn):
    assert cucn.row_overrides("plain_ce", "dlib") == ["model.name=dlib_resnet29", "method.mixing=false",
                                                      "method.class_weights=none"]
    assert cucn.row_overrides("plain_weights", "cpu")[0] == "model.name=resnet18"
    assert cucn.row_overrides("cucn", "dlib") == []
    assert cucn.cell_name("fer2013", "cucn", 2, 0.2) == "fer2013_cucn_noise20_s2"
    # --weights: only the weighted rows change (so the unweighted baseline's cells are reused), and their names say so
    assert cucn.row_overrides("plain_weights", "dlib", "sqrt") == ["model.name=dlib_resnet29", "method.mixing=false",
                                                                   "method.class_weights=sqrt"]
    assert cucn.row_overrides("cucn", "dlib", "effective") == ["method.class_weights=effective"]
    assert cucn.row_overrides("plain_ce", "dlib", "sqrt") == cucn.row_overrides("plain_ce", "dlib")
    assert cucn.cell_name("ferplus", "plain_weights", 1, 0.0, "sqrt") == "ferplus_plain_weights_wsqrt_s1"
    assert cucn.cell_name("ferplus", "plain_ce", 1, 0.0, "sqrt") == "ferplus_plain_ce_s1"
    from fairexpr.models.layers import CBAM_INITS

    assert set(cucn.CBAM_INIT_WORDS) == set(CBAM_INITS)  # every initialisation the layer knows is described
    # --cbam-init: only the rows that keep CBAM change (the backbone rows' cells are reused), and their names say so
    assert cucn.row_overrides("cbam_weights", "dlib", "sqrt", "identity") == [
        "method.mixing=false", "method.class_weights=sqrt", "model.kwargs.cbam_init=identity"]
    assert cucn.row_overrides("plain_weights", "dlib", "sqrt", "identity") == cucn.row_overrides("plain_weights", "dlib", "sqrt")
    assert cucn.cell_name("ferplus", "cbam_weights", 0, 0.0, "sqrt", "identity") == "ferplus_cbam_weights_wsqrt_cbamidentity_s0"
    assert cucn.cell_name("ferplus", "plain_weights", 0, 0.0, "sqrt", "identity") == "ferplus_plain_weights_wsqrt_s0"
    with pytest.raises(SystemExit, match="--shard"):
        cucn.parse_shard("2/2")


def test_bench_end_to_end_two_shards_then_collect(cucn, tmp_path, capsys):
    args = ["--synthetic", "--recipe", "cpu", "--rows", "plain_ce", "plain_weights", "--seeds", "0", "1",
            "--noise", "0.1", "--cpu-minutes", "0.3", "--epochs", "1", "--out", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "res"), "--tag", "t", "--override", "optim.weight_decay=0.0002"]
    assert cucn.main(args + ["--shard", "0/2"]) == 0
    assert cucn.main(args + ["--shard", "1/2"]) == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert len(runs) == 4 and all("_noise10_s" in r for r in runs)
    stamp = {r: (tmp_path / "runs" / r / "result.json").stat().st_mtime_ns for r in runs}
    capsys.readouterr()
    assert cucn.main(args + ["--collect"]) == 0
    assert stamp == {r: (tmp_path / "runs" / r / "result.json").stat().st_mtime_ns for r in runs}  # nothing re-run
    res = json.loads((tmp_path / "res" / "t.json").read_text())
    ds = res["datasets"]["synthetic"]
    assert sorted(ds["rows"]) == ["plain_ce", "plain_weights"] and sorted(ds["rows"]["plain_ce"]) == ["0", "1"]
    claim = ds["claims"][0]
    assert claim["claim"] == "class weights shrink the max–min class gap" and claim["B − A [95 % CI] (points)"].endswith("(n=2)")
    assert res["meta"]["missing_cells"] == [] and "0.1 symmetric" in res["meta"]["label_noise"]
    # each run trained on noisy labels: the engine recorded the flips
    cfg = (tmp_path / "runs" / runs[0] / "config.yaml").read_text()
    assert "label_noise: 0.1" in cfg and "weight_decay: 0.0002" in cfg  # --override reaches every cell
    md = (tmp_path / "res" / "t.md").read_text()
    assert "| plain_ce (backbone, unweighted CE) | 0 1 |" in md and (tmp_path / "res" / "t_synthetic").is_dir()
    # rule 2 per row, read from each run's validation curve (one epoch: the last is the best, no earlier to lead)
    run0 = ds["rows"]["plain_ce"]["0"]
    assert run0["rule2_epochs"] == 1 and run0["rule2_best_epoch"] == 1 and run0["rule2_last_lead"] is None
    assert "| rule 2 |" in md and "| 1 (1), 1 (1) | not met (2 of 2) |" in md
    # --archive with --collect keeps the cells finished before it; a fresh --out restores them: the same tables
    assert cucn.main(args + ["--collect", "--archive", str(tmp_path / "kept")]) == 0
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == runs
    fresh = [*args[:args.index("--out") + 1], str(tmp_path / "fresh"), *args[args.index("--out") + 2:]]
    capsys.readouterr()
    assert cucn.main(fresh + ["--tag", "t_fresh", "--archive", str(tmp_path / "kept")]) == 0
    assert "restored 4 finished cell(s)" in capsys.readouterr().out
    fresh_ds = json.loads((tmp_path / "res" / "t_fresh.json").read_text())["datasets"]["synthetic"]
    assert fresh_ds["claims"] == ds["claims"] and not list((tmp_path / "fresh").glob("*/last.json"))
    capsys.readouterr()
    assert cucn.main(args + ["--seeds", "0", "1", "2", "--status"]) == 0
    out = capsys.readouterr().out
    assert out.count(": finished\n") == 4 and out.count(": not started") == 2 and "4 of 6 cells finished" in out
    with pytest.raises(SystemExit) as e:
        cucn.main(args + ["--status", "--shard", "0/2"])
    assert e.value.code == 2 and "--status lists every cell and stops" in capsys.readouterr().err
    # a cell missing from the grid is listed, not silently dropped
    assert cucn.main(args + ["--tag", "t2", "--seeds", "0", "1", "2", "--collect"]) == 0
    res2 = json.loads((tmp_path / "res" / "t2.json").read_text())
    assert sorted(res2["meta"]["missing_cells"]) == ["synthetic_plain_ce_noise10_s2", "synthetic_plain_weights_noise10_s2"]
    assert "**Missing cells**" in (tmp_path / "res" / "t2.md").read_text()
    # --weights sqrt: a new cell for the weighted row only; the unweighted baseline is reused and paired with it
    w = args + ["--seeds", "0", "--weights", "sqrt", "--tag", "t3"]  # the later --seeds / --tag win
    assert cucn.main(w + ["--rows", "plain_weights"]) == 0
    new = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir() and p.name not in runs)
    assert len(new) == 1 and new[0].startswith("synthetic_plain_weights_wsqrt_noise10_s0_")
    assert "class_weights: sqrt" in (tmp_path / "runs" / new[0] / "config.yaml").read_text()
    assert cucn.main(w + ["--collect"]) == 0
    assert stamp == {r: (tmp_path / "runs" / r / "result.json").stat().st_mtime_ns for r in runs}
    res3 = json.loads((tmp_path / "res" / "t3.json").read_text())
    assert res3["meta"]["missing_cells"] == [] and res3["meta"]["class_weights"].startswith("square-root")
    c3 = res3["datasets"]["synthetic"]["claims"][0]
    assert c3["B − A [95 % CI] (points)"].endswith("(n=1, no interval)") and c3["verdict"] == "one seed: no interval"
    # --cbam-init identity: a new CBAM cell built with identity gates, paired with the reused backbone cell
    ci = w + ["--rows", "plain_weights", "cbam_weights", "--cbam-init", "identity", "--tag", "t4"]
    assert cucn.main(ci) == 0
    cb = [p.name for p in (tmp_path / "runs").iterdir() if p.is_dir() and p.name.startswith("synthetic_cbam_weights_wsqrt_cbamidentity")]
    assert len(cb) == 1 and "cbam_init: identity" in (tmp_path / "runs" / cb[0] / "config.yaml").read_text()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir() and "plain_weights_wsqrt" in p.name) == new
    res4 = json.loads((tmp_path / "res" / "t4.json").read_text())
    assert res4["meta"]["cbam_init"].startswith("identity") and res4["meta"]["missing_cells"] == []
    assert [c["claim"] for c in res4["datasets"]["synthetic"]["claims"]][0] == "CBAM recovers the accuracy the weights cost"


def test_bad_noise_is_one_clear_error(cucn, capsys):
    with pytest.raises(SystemExit):
        cucn.main(["--synthetic", "--noise", "1.5", "--collect"])
    assert "--noise must be in [0, 1), got 1.5" in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["--weights", "sqrt", "--rows", "plain_ce"], "--weights sqrt: none of --rows plain_ce uses class weights "
                                                  "(the weighted rows: plain_weights, cbam_weights, cucn)"),
    (["--cbam-init", "identity", "--rows", "plain_ce", "plain_weights"],
     "--cbam-init identity: none of --rows plain_ce plain_weights has CBAM (the CBAM rows: cbam_weights, cucn)"),
    (["--datasets", "fer2013"], "--datasets fer2013 picks real datasets, --synthetic runs the built-in synthetic"),
    (["--shard", "1/2"], "--shard 1/2 splits the cells to run; --collect builds the tables from every shard's cells"),
])
def test_an_option_no_cell_uses_is_one_clear_error(cucn, capsys, tmp_path, argv, says):
    with pytest.raises(SystemExit) as e:
        cucn.main(["--synthetic", "--collect", "--out", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res"),
                   *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert not (tmp_path / "res").exists()  # refused before anything is written


def test_synthetic_cells_into_the_repository_archive_are_refused(cucn, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        cucn.main(["--synthetic", "--collect", "--out", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res"),
                   "--archive", "benchmarks/results/cells/x"])
    assert e.value.code == 2 and "--synthetic cells are meaningless: pass --archive to a scratch folder" in capsys.readouterr().err
    assert not (Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "cells" / "x").exists()
