"""benchmarks/grefel.py end to end on synthetic faces: without RB and with RB at two seeds, the
paired claims table, epochs per cell, the command and ``--tag`` file names; a --collect afterwards trains nothing;
a bad ``--tag`` and synthetic numbers into benchmarks/results are refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from _bench import load_bench


@pytest.fixture(scope="module")
def grefel():
    return load_bench("grefel")


def test_synthetic_grid_claims_and_collect(grefel, tmp_path, capsys):
    base = ["--datasets", "synthetic", "--model", "reliability_balanced", "--tables", "a", "--variants", "norb", "rb", "--seeds", "0", "1", "--epochs", "1", "--minutes", "0", "--synthetic-total", "120",
            "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "res"), "--tag", "g_smoke",
            "--override", "train.batch_size=16"]
    assert grefel.main(base) == 0
    res = tmp_path / "res"
    assert {p.name for p in res.iterdir()} >= {"g_smoke_runs.json", "g_smoke_tables.json", "g_smoke_tables.md",
                                               "g_smoke_tsne.png", "g_smoke_tsne_without_rb.png"}
    runs = json.loads((res / "g_smoke_runs.json").read_text())
    assert runs["meta"]["command"].startswith("python benchmarks/grefel.py --datasets synthetic")
    assert len(runs["runs"]) == 4  # {norb, rb} x 2 seeds
    tables = json.loads((res / "g_smoke_tables.json").read_text())
    claims = tables["claims_paired_by_seed"]
    cols = claims["columns"]
    rows = [dict(zip(cols, r)) for r in claims["data"]]
    assert {r["claim"] for r in rows} == {"RB > without RB"}  # the others by hand in tests/grefel
    assert all(r["B − A [95 % CI] (points)"].endswith("(n=2)") for r in rows)
    ep = tables["epochs_run_and_kept"]
    assert all(row[-2:] == ["s0: 1 (1), s1: 1 (1)", "not met (2 of 2)"] for row in ep["data"])  # 1 epoch: last = best
    assert all(r["rule2_epochs"] == 1 and r["rule2_best_epoch"] == 1 for r in runs["runs"])
    md = (res / "g_smoke_tables.md").read_text()
    assert "## claims_paired_by_seed" in md and "- command: `python benchmarks/grefel.py" in md
    capsys.readouterr()
    assert grefel.main([*base, "--collect"]) == 0
    assert "\n+ " not in "\n" + capsys.readouterr().out  # nothing trained again

    # one change of settings against that run as the baseline: the RB cells again with data-initialised anchors
    changed = [*base[:base.index("--tag")], "--tag", "g_change", "--override", "train.batch_size=16",
               "model.kwargs.anchor_init=data", "--baseline", str(res / "g_smoke_runs.json"), "--borrow", "norb"]
    changed[changed.index("norb")] = "rb"  # --variants rb rb: the rb cells only
    assert grefel.main(changed) == 0
    runs = json.loads((res / "g_change_runs.json").read_text())
    assert runs["meta"]["baseline"]["change"] == "model.kwargs.anchor_init=data"
    # the saved configs of both pairs were compared: they differ in the anchor init only
    assert runs["meta"]["baseline"]["configs"] == {"pairs_checked": 2, "pairs_not_on_this_machine": 0}
    assert {r["anchor_init"] for r in runs["runs"]} == {"data"} and len(runs["runs"]) == 2
    tables = json.loads((res / "g_change_tables.json").read_text())
    rows = [dict(zip(tables["change_vs_baseline"]["columns"], r)) for r in tables["change_vs_baseline"]["data"]]
    assert {(r["variant"], r["change (B)"], r["seeds"]) for r in rows} == {("anchors + MHSA", "model.kwargs.anchor_init=data", "0 1")}
    assert {r["metric"] for r in rows} == {"accuracy", "balanced accuracy", "macro-F1"}
    claims = [dict(zip(tables["claims_with_baseline_cells"]["columns"], r))
              for r in tables["claims_with_baseline_cells"]["data"]]
    # the heads without RB are the baseline's (the change does not touch them), the RB arm is this run's
    old = {r["seed"]: r for r in json.loads((res / "g_smoke_runs.json").read_text())["runs"] if r["rb"] == "without RB"}
    new = {r["seed"]: r for r in runs["runs"]}
    acc = next(c for c in claims if c["claim"] == "RB > without RB" and c["metric"] == "accuracy")
    assert acc["A"] == f"{(old[0]['accuracy'] + old[1]['accuracy']) / 2 * 100:.2f}"
    assert acc["B"] == f"{(new[0]['accuracy'] + new[1]['accuracy']) / 2 * 100:.2f}"
    assert "Baseline (A)" in (res / "g_change_tables.md").read_text() and "--borrow" in (res / "g_change_tables.md").read_text()
    # without --borrow no baseline cell enters the claims (a change may touch every cell that has anchors)
    assert grefel.main([*changed[:changed.index("--borrow")], "--collect"]) == 0
    tables = json.loads((res / "g_change_tables.json").read_text())
    assert "claims_with_baseline_cells" not in tables and "change_vs_baseline" in tables

    # a baseline that set the changed key to another value is the same change, not a dropped override: one made
    # with --override model.kwargs.anchor_init=normal pairs with this run's =data
    doc = json.loads((res / "g_smoke_runs.json").read_text())
    doc["meta"]["overrides"] = [*doc["meta"]["overrides"], "model.kwargs.anchor_init=normal"]
    (res / "g_normal_runs.json").write_text(json.dumps(doc))
    both = [*changed[:changed.index("--baseline")], "--baseline", str(res / "g_smoke_runs.json"),
            str(res / "g_normal_runs.json"), "--borrow", "norb", "--collect"]
    assert grefel.main(both) == 0
    assert json.loads((res / "g_change_runs.json").read_text())["meta"]["baseline"]["change"] == \
        "model.kwargs.anchor_init=data"
    # a baseline run whose recipe was edited since (its saved config differs elsewhere too) is refused, in one line
    cfg = Path(next(r["run"] for r in doc["runs"] if r["rb"] != "without RB")) / "config.yaml"
    saved = cfg.read_text()
    assert "batch_size: 16" in saved
    cfg.write_text(saved.replace("batch_size: 16", "batch_size: 32"))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        grefel.main([*changed, "--collect"])
    err = capsys.readouterr().err
    assert "differs from" in err and "train.batch_size (32 -> 16), not only in model.kwargs.anchor_init=data" in err
    assert "Traceback" not in err
    cfg.write_text(saved)
    # pairs whose folders are not on this machine are counted, not checked
    gone = [{**r, "run": str(tmp_path / "elsewhere" / Path(r["run"]).name)} for r in doc["runs"]]
    assert grefel.verify_change(gone, runs["runs"], ["model.kwargs.anchor_init=data"]) == \
        {"pairs_checked": 0, "pairs_not_on_this_machine": 2}

    # a baseline that cannot be compared is refused in one line before anything trains
    capsys.readouterr()
    for argv, msg in (([*changed[:changed.index("--epochs")], "--epochs", "2", *changed[changed.index("--epochs") + 2:]],
                       "its budget is"),
                      ([*changed[:changed.index("--override")], "--override", "train.batch_size=16", "--baseline",
                        str(res / "g_smoke_runs.json")], "nothing changed"),
                      ([*changed[:changed.index("--baseline")], "--baseline", str(res / "g_smoke_tables.json")],
                       "expected a benchmarks/grefel.py <tag>_runs.json"),
                      ([*changed[:changed.index("--baseline")], "--borrow", "norb"], "give --baseline too"),
                      ([*changed[:changed.index("--override")], "--override", "model.kwargs.anchor_init=data",
                        "--baseline", str(res / "g_smoke_runs.json")], "it ran with --override train.batch_size=16")):
        with pytest.raises(SystemExit):
            grefel.main(argv)
        err = capsys.readouterr()
        assert msg in err.err and "Traceback" not in err.err and "\n+ " not in "\n" + err.out


def test_verify_change_reads_override_values_with_spaces(grefel, tmp_path):
    # a changed item like `model.kwargs={backbone: resnet18, dropout: 0.2}` is one setting, not three words
    cell = {"dataset": "fer2013", "rb": "anchors + MHSA", "loss": "L_cls + L_a + L_c", "label_noise": 0.2, "seed": 0}
    for name, dropout in (("a", 0.1), ("b", 0.2)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(f"seed: 0\nmodel:\n  kwargs: {{backbone: resnet18, dropout: {dropout}}}\n")
    change = ["model.kwargs={backbone: resnet18, dropout: 0.2}"]
    assert grefel.verify_change([{**cell, "run": str(tmp_path / "a")}], [{**cell, "run": str(tmp_path / "b")}], change) == \
        {"pairs_checked": 1, "pairs_not_on_this_machine": 0}
    (tmp_path / "b" / "config.yaml").write_text("seed: 1\nmodel:\n  kwargs: {backbone: resnet18, dropout: 0.2}\n")
    with pytest.raises(ValueError, match=r"in seed \(0 -> 1\), not only in model.kwargs="):
        grefel.verify_change([{**cell, "run": str(tmp_path / "a")}], [{**cell, "run": str(tmp_path / "b")}], change)


def test_bad_tag_and_synthetic_into_results_are_refused(grefel, tmp_path, capsys):
    with pytest.raises(SystemExit):
        grefel.main(["--datasets", "synthetic", "--results", str(tmp_path), "--tag", "a/b"])
    assert "--tag 'a/b': expected a file-name prefix" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        grefel.main(["--datasets", "synthetic"])
    assert "numbers are meaningless" in capsys.readouterr().err


def test_cells_of_each_table_and_the_variants_filter(grefel):
    assert grefel.cells(["a"], variants=("norb", "rb")) == [("norb", "cls_a_c", 0.0), ("rb", "cls_a_c", 0.0)]
    assert grefel.cells(["b"]) == [("rb", "cls", 0.0), ("rb", "cls_a", 0.0), ("rb", "cls_a_c", 0.0)]
    # table c: both rows per rate by default; shared with table a's clean cells
    assert grefel.cells(["a", "c"], noise_rates=(0.0, 0.2), variants=("norb", "rb")) == [
        ("norb", "cls_a_c", 0.0), ("rb", "cls_a_c", 0.0), ("norb", "cls_a_c", 0.2), ("rb", "cls_a_c", 0.2)]
    # --variants splits a noise rate's two cells between processes
    assert grefel.cells(["c"], noise_rates=(0.2,), variants=("rb",)) == [("rb", "cls_a_c", 0.2)]
    assert grefel.cells(["c"], noise_rates=(0.2,), variants=("mhsa",)) == []
    # --losses splits table b's rows the same way
    assert grefel.cells(["b"], losses=("cls",)) == [("rb", "cls", 0.0)]
    assert grefel.cells(["b"], losses=("cls_a", "cls_a_c")) == [("rb", "cls_a", 0.0), ("rb", "cls_a_c", 0.0)]


def test_no_cell_to_run_is_a_clear_error(grefel, capsys):
    with pytest.raises(SystemExit):
        grefel.main(["--tables", "c", "--variants", "anchors", "--datasets", "synthetic", "--results", "/tmp/unused"])
    assert "no cell to run" in capsys.readouterr().err


def test_an_unknown_table_b_loss_is_a_clear_error(grefel, capsys):
    with pytest.raises(SystemExit):
        grefel.main(["--tables", "b", "--losses", "bogus", "--datasets", "synthetic", "--results", "/tmp/unused"])
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


@pytest.mark.parametrize("tables, opt, value", [(["a"], "--losses", "cls"), (["a", "b"], "--noise", "0.2"),
                                                (["b"], "--variants", "rb")])
def test_a_row_filter_of_a_table_not_run_is_refused(grefel, capsys, tables, opt, value):
    with pytest.raises(SystemExit):
        grefel.main(["--tables", *tables, opt, value, "--datasets", "synthetic", "--results", "/tmp/unused"])
    err = capsys.readouterr().err
    assert f"{opt} picks rows of table" in err and f"--tables is {' '.join(tables)}" in err


@pytest.mark.parametrize("argv, msg", [(["--tables", "b", "--collapse-below", "50"],
                                        "--collapse-below counts runs of table a or c, but --tables is b"),
                                       (["--tables", "c", "--collapse-below", "0"], "--collapse-below 0: expected a test accuracy in %"),
                                       (["--tables", "c", "--collapse-below", "150"], "between 0 and 100"),
                                       (["--tables", "c", "--early-warning", "3", "34"],
                                        "--early-warning tests a flag against collapses: give --collapse-below too"),
                                       (["--tables", "c", "--collapse-below", "50", "--epochs", "2", "--early-warning", "3", "34"],
                                        "EPOCH must be a whole epoch from 1 to --epochs (2)"),
                                       (["--tables", "c", "--collapse-below", "50", "--early-warning", "1.5", "34"],
                                        "EPOCH must be a whole epoch"),
                                       (["--tables", "c", "--collapse-below", "50", "--early-warning", "1", "0"],
                                        "PCT must be a holdout balanced accuracy in %")])
def test_a_bad_collapse_threshold_is_refused(grefel, capsys, argv, msg):
    with pytest.raises(SystemExit):
        grefel.main([*argv, "--datasets", "synthetic", "--results", "/tmp/unused"])
    assert msg in capsys.readouterr().err


def test_noise_table_with_collapse_counts_end_to_end(grefel, tmp_path):
    """Table c at one noise rate on synthetic faces, both heads, two seeds, with a collapse threshold of 99.9 %: the
    counts and marks must match the runs' own accuracies (recomputed from the runs file), and the p the counts'."""
    argv = ["--datasets", "synthetic", "--model", "reliability_balanced", "--tables", "c", "--noise", "0.2",
            "--seeds", "0", "1", "--epochs", "1", "--minutes", "0", "--synthetic-total", "120", "--collapse-below", "99.9",
            "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "res"), "--tag", "g_noise",
            "--override", "train.batch_size=16", "--early-warning", "1", "99.9"]
    assert grefel.main(argv) == 0
    tables = json.loads((tmp_path / "res" / "g_noise_tables.json").read_text())
    assert "embedding_cluster_quality" not in tables  # no clean full-loss cell in a noise-only run: no empty table
    rows = [dict(zip(tables["label_noise_collapses"]["columns"], r)) for r in tables["label_noise_collapses"]["data"]]
    assert len(rows) == 1 and rows[0]["label noise"] == "20%" and rows[0]["collapse: below"] == "99.9%"
    runs = json.loads((tmp_path / "res" / "g_noise_runs.json").read_text())
    hits = {head: sum(r["accuracy"] < 0.999 for r in runs["runs"] if r["rb"] == head)
            for head in ("without RB", "anchors + MHSA")}
    assert rows[0]["without RB collapsed"] == f"{hits['without RB']} of 2"
    assert rows[0]["with RB collapsed"] == f"{hits['anchors + MHSA']} of 2"
    assert rows[0]["with RB by seed"].startswith("s0: ") and rows[0]["with RB by seed"].count("*") == hits["anchors + MHSA"]
    from fairexpr.evaluation.stats import fisher_one_sided

    want_p = fisher_one_sided(hits["without RB"], 2, hits["anchors + MHSA"], 2)
    assert rows[0]["Fisher p (without RB collapses more)"] == f"{want_p:.3f}"
    assert runs["meta"]["collapse_below_pct"] == 99.9
    # early warning at epoch 1 below 99.9 %: every run is flagged (a holdout below 99.9 %); the flagged runs split
    # into collapsed / trained exactly as the collapse counts do, per head
    ew = [dict(zip(tables["label_noise_early_warning"]["columns"], r)) for r in tables["label_noise_early_warning"]["data"]]
    assert [r["head"] for r in ew] == ["without RB", "with RB", "both heads"]
    for r, head in zip(ew, ("without RB", "anchors + MHSA")):
        assert (r["flagged, collapsed"], r["flagged, trained"], r["runs"]) == (hits[head], 2 - hits[head], 2)
    assert runs["meta"]["early_warning"] == {"epoch": 1, "below_pct": 99.9}
    assert all(len(r["val_curve"]) == 1 for r in runs["runs"])
    per_class = tables.get("label_noise_collapsed_runs_per_class")
    n_hits = sum(hits.values())
    assert (len(per_class["data"]) if per_class else 0) == n_hits  # one row per collapsed run, none when none
    if per_class:
        assert per_class["columns"][:6] == ["dataset", "label noise", "head", "seed", "accuracy", "balanced"]
        assert "RB − without RB, accuracy, neither collapsed (described)" in tables["label_noise_collapses"]["columns"]
    md = (tmp_path / "res" / "g_noise_tables.md").read_text()
    assert "## label_noise_collapses" in md and "below 99.9 % (marked *)" in md


def test_clean_table_a_counts_collapses_of_the_two_heads_end_to_end(grefel, tmp_path):
    """--collapse-below with table a (clean labels): the same collapse and early-warning tables, one row at 0 %
    noise, counting only the two heads (without RB, full RB) even when table a's other variants ran."""
    argv = ["--datasets", "synthetic", "--model", "reliability_balanced", "--tables", "a", "--variants", "norb", "anchors",
            "rb", "--seeds", "0", "--epochs", "1", "--minutes", "0", "--synthetic-total", "120",
            "--collapse-below", "99.9", "--early-warning", "1", "99.9", "--out", str(tmp_path / "runs"),
            "--results", str(tmp_path / "res"), "--tag", "g_clean", "--override", "train.batch_size=16"]
    assert grefel.main(argv) == 0
    tables = json.loads((tmp_path / "res" / "g_clean_tables.json").read_text())
    assert "table2_reliability_balancing" in tables and "table7_label_noise_accuracy" not in tables
    rows = [dict(zip(tables["label_noise_collapses"]["columns"], r)) for r in tables["label_noise_collapses"]["data"]]
    assert len(rows) == 1 and rows[0]["label noise"] == "0%"
    runs = json.loads((tmp_path / "res" / "g_clean_runs.json").read_text())["runs"]
    assert sorted(r["rb"] for r in runs) == ["anchors + MHSA", "anchors only", "without RB"]
    acc = {r["rb"]: r["accuracy"] for r in runs}
    assert rows[0]["without RB by seed"] == f"s0: {acc['without RB'] * 100:.1f}" + ("*" if acc["without RB"] < 0.999 else "")
    assert rows[0]["with RB by seed"] == f"s0: {acc['anchors + MHSA'] * 100:.1f}" + ("*" if acc["anchors + MHSA"] < 0.999 else "")
    ew = [dict(zip(tables["label_noise_early_warning"]["columns"], r)) for r in tables["label_noise_early_warning"]["data"]]
    assert [r["head"] for r in ew] == ["without RB", "with RB", "both heads"] and ew[-1]["runs"] == 2  # "anchors only" left out


def test_a_cell_archive_lets_a_fresh_checkout_skip_and_collect_finished_cells(grefel, tmp_path, capsys):
    """--archive: finished cells are copied (small files, no weights) as they finish; with another --out (a fresh
    checkout) they are restored instead of trained, and --collect on them gives the same tables."""
    argv = ["--datasets", "synthetic", "--model", "reliability_balanced", "--tables", "c", "--noise", "0.2",
            "--variants", "norb", "--seeds", "0", "1", "--epochs", "1", "--minutes", "0", "--synthetic-total", "120",
            "--collapse-below", "50", "--results", str(tmp_path / "res"), "--tag", "g_arch",
            "--archive", str(tmp_path / "cells"), "--override", "train.batch_size=16"]
    assert grefel.main([*argv, "--out", str(tmp_path / "runs")]) == 0
    cells = sorted((tmp_path / "cells").iterdir())
    assert [c.name.rsplit("_", 1)[0] for c in cells] == ["synthetic_norb_cls_a_c_n20_s0", "synthetic_norb_cls_a_c_n20_s1"]
    for c in cells:
        kept = {str(f.relative_to(c)) for f in c.rglob("*") if f.is_file()}
        assert kept == {"result.json", "model.json", "config.yaml", "metrics.csv", "eval/test/metrics.json",
                        "eval/val/metrics.json"}
        assert (tmp_path / "runs" / "reliability_balanced" / c.name / "model.safetensors").is_file()
    first = json.loads((tmp_path / "res" / "g_arch_tables.json").read_text())
    capsys.readouterr()
    # a fresh checkout: nothing trained, both cells restored, the same tables
    assert grefel.main([*argv, "--out", str(tmp_path / "fresh")]) == 0
    out = capsys.readouterr().out
    assert "restored 2 finished cell(s)" in out and "\n+ " not in "\n" + out
    assert json.loads((tmp_path / "res" / "g_arch_tables.json").read_text()) == first
    restored = tmp_path / "fresh" / "reliability_balanced" / cells[0].name
    assert json.loads((restored / "restored_from_archive.json").read_text())["archive"] == str(cells[0])
    assert not (restored / "model.safetensors").exists()
    assert grefel.main([*argv, "--out", str(tmp_path / "fresh2"), "--collect"]) == 0
    assert json.loads((tmp_path / "res" / "g_arch_tables.json").read_text()) == first
    runs = json.loads((tmp_path / "res" / "g_arch_runs.json").read_text())
    assert runs["meta"]["archive"] == str(tmp_path / "cells") and {e["status"] for e in runs["log"]} == {"collected"}
    # --status: where each cell stands, from files only; nothing restored, trained or written
    capsys.readouterr()
    assert grefel.main([*argv, "--out", str(tmp_path / "fresh3"), "--status", "--seeds", "0", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count(": finished (archived)") == 2 and "_s2_" in out and ": not started" in out
    assert out.rstrip().endswith("2 of 3 cells finished")
    assert not (tmp_path / "fresh3" / "reliability_balanced" / cells[0].name).exists()
    with pytest.raises(SystemExit) as e:
        grefel.main([*argv, "--out", str(tmp_path / "fresh3"), "--status", "--collect"])
    assert e.value.code == 2 and "--status lists the cells and stops" in capsys.readouterr().err


@pytest.mark.parametrize("argv, msg", [
    (["--speed", "--archive", "/tmp/unused_cells", "--results", "/tmp/unused"], "--archive keeps trained cells"),
    (["--datasets", "synthetic", "--results", "/tmp/unused", "--archive", "benchmarks/results/cells/x"],
     "--datasets synthetic cells are meaningless"),
    (["--datasets", "synthetic", "--results", "/tmp/unused", "--archive", __file__],
     "expected a folder of archived cells, found a file"),
])
def test_archive_misuse_is_refused(grefel, capsys, argv, msg):
    with pytest.raises(SystemExit) as e:
        grefel.main(argv)
    assert e.value.code == 2 and msg in capsys.readouterr().err
