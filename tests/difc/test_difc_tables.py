"""DIFC paper-shaped tables from hand-made run records."""
from __future__ import annotations

import json

import pytest

from fairexpr.evaluation.difc_tables import (accuracy_table, confusing_classes_table, confusion_order_table,
                                             first_confusion_order, load_run, make_record, plug_and_play_table,
                                             to_markdown)

CLASSES = ("a", "b", "c", "d")


def rec(method, loss, seed, acc, bal, per_class, order=None, target="ck"):
    hist = [{"epoch": 1, "difc_phase": 1, "difc_order": "null"}]
    if order is not None:
        hist.append({"epoch": 2, "difc_phase": 2, "difc_updated": 1, "difc_order": json.dumps(order)})
        hist.append({"epoch": 3, "difc_phase": 2, "difc_updated": 1, "difc_order": json.dumps(list(reversed(order)))})
    m = {"accuracy": acc, "balanced_accuracy": bal, "macro_f1": bal, "per_class_accuracy": dict(zip(CLASSES, per_class))}
    return make_record(run=f"{method}-{loss}-{seed}", method=method, cls_loss=loss, source="fer", target=target,
                       seed=seed, metrics=m, history=hist)


RECORDS = [
    rec("mcd", "di", 0, 0.50, 0.40, [0.2, 0.4, 0.6, 0.8]),
    rec("mcd", "di", 1, 0.60, 0.50, [0.4, 0.4, 0.6, 0.8]),
    rec("mcd", "difc", 0, 0.70, 0.60, [0.6, 0.5, 0.6, 0.7], order=[0, 1, 2, 3]),
    rec("mcd", "difc", 1, 0.70, 0.60, [0.6, 0.5, 0.6, 0.7], order=[1, 0, 2, 3]),
    rec("dann", "ce", 0, 0.40, 0.30, [0.1, 0.2, 0.3, 0.4]),
]


def test_first_confusion_order_is_the_one_after_the_di_phase():
    assert first_confusion_order(RECORDS[2]) == [0, 1, 2, 3]
    assert first_confusion_order(RECORDS[0]) is None


def test_accuracy_table_mean_std_over_seeds():
    t = accuracy_table(RECORDS)
    row = t[(t.method == "MCD") & (t.cls_loss == "DI")].iloc[0]
    assert row.seeds == 2
    assert row.accuracy == "55.00 ± 5.00"
    assert row.balanced_accuracy == "45.00 ± 5.00"
    assert t[(t.method == "DANN")].iloc[0].accuracy == "40.00"


def test_confusion_order_table_mean_rank():
    t = confusion_order_table(RECORDS, CLASSES)
    assert len(t) == 1
    row = t.iloc[0]
    # ranks: a (1, 2) and b (2, 1) tie at 1.5 -> class-index order
    assert [row["1"], row["2"], row["3"], row["4"]] == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="permutation"):
        confusion_order_table([rec("mcd", "difc", 0, 0.5, 0.5, [0] * 4, order=[0, 0, 1, 2])], CLASSES)


def test_confusing_classes_table_top2_vs_rest():
    t = confusing_classes_table(RECORDS, CLASSES, top=2)
    top = t[t.group == "top-2 confusing"].iloc[0]
    # DI: seed0 mean(a, b) = 0.3, seed1 = 0.4 -> 35 ± 5 ; DIFC: 0.55 both seeds
    assert top.classes == "a, b"
    assert top.DI == "35.00 ± 5.00" and top.DIFC == "55.00 ± 0.00"
    assert top.change == "+20.00"
    rest = t[t.group == "rest"].iloc[0]
    assert rest.DI == "70.00 ± 0.00" and rest.DIFC == "65.00 ± 0.00" and rest.change == "-5.00"


def test_plug_and_play_table_shape_and_cells():
    t = plug_and_play_table(RECORDS)
    assert list(t.index) == ["CE", "DI", "DIFC"] and list(t.columns) == ["DANN", "SAFN", "MCD"]
    assert t.loc["DIFC", "MCD"] == "70.00 ± 0.00"
    assert t.loc["CE", "DANN"] == "40.00"
    assert t.loc["CE", "SAFN"] == "–"
    md = to_markdown(t, index=True)
    assert md.splitlines()[0] == "| cls_loss | DANN | SAFN | MCD |"
    with pytest.raises(ValueError, match="metric"):
        plug_and_play_table(RECORDS, metric="auc")


def test_missing_eval_and_bad_run_dir(tmp_path):
    r = make_record(run="x", method="mcd", cls_loss="di", source="s", target="t", seed=0, metrics=None)
    with pytest.raises(ValueError, match="target-eval"):
        accuracy_table([r])
    with pytest.raises(FileNotFoundError, match="result.json"):
        load_run(tmp_path)


def test_write_tables_files_and_figure(tmp_path):
    from fairexpr.evaluation.difc_tables import write_tables

    paths = write_tables(RECORDS, CLASSES, tmp_path, header="# t\n")
    md = paths["markdown"].read_text()
    for name in ("table2_accuracy", "table3_confusion_order", "table4_confusing_vs_rest", "table5_plug_and_play_ck"):
        assert f"## {name}" in md
    data = json.loads(paths["json"].read_text())
    assert data["table2_accuracy"]["data"][0][:2] == ["MCD", "DI"]
    assert paths["figure"].stat().st_size > 5000 and paths["figure"].read_bytes()[:4] == b"\x89PNG"


def _write_run(d, method, loss, seed, acc, order=None):
    import yaml

    d.mkdir(parents=True)
    hist = [{"epoch": 1, "difc_phase": 1}] + ([{"epoch": 2, "difc_phase": 2, "difc_updated": 1,
                                               "difc_order": json.dumps(order)}] if order else [])
    ev = {"accuracy": acc, "balanced_accuracy": acc - 0.1, "macro_f1": acc, "classes": list(CLASSES),
          "per_class_accuracy": dict(zip(CLASSES, [acc] * 4)), "n": 10}
    (d / "result.json").write_text(json.dumps({"history": hist, "eval": {"target_eval": ev}}))
    (d / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "method": {"name": method, "cls_loss": loss},
                                                   "data": {"train": "fer2013:/f", "target": "ckplus:/c/CK+48"}}))


def test_adapt_report_cli(tmp_path):
    from click.testing import CliRunner

    from fairexpr.cli import cli

    runs = []
    for i, (loss, acc, order) in enumerate([("di", 0.5, None), ("difc", 0.6, [3, 2, 1, 0]), ("difc", 0.7, [3, 1, 2, 0])]):
        _write_run(tmp_path / f"r{i}", "mcd", loss, i, acc, order)
        runs.append(str(tmp_path / f"r{i}"))
    r = CliRunner().invoke(cli, ["adapt-report", *runs, "--out", str(tmp_path / "rep"), "--top", "1", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    md = (tmp_path / "rep" / "difc_tables.md").read_text()
    assert "| MCD | DIFC | fer2013:/f | ckplus:/c/CK+48 | 2 | 65.00 ± 5.00 |" in md
    assert "| ckplus:/c/CK+48 | MCD | 2 | d |" in md  # rank 1 by mean rank over the two DIFC runs
    assert out["figure"].endswith("difc_per_class.png")
    r = CliRunner().invoke(cli, ["adapt-report", str(tmp_path), "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "not a finished `fairexpr adapt` run" in r.output
    r = CliRunner().invoke(cli, ["adapt-report", runs[0], "--out", str(tmp_path / "x"), "--top", "4"])
    assert r.exit_code != 0 and "--top 4" in r.output


def _three_seed_records():
    bal = {"ce": [0.40, 0.42, 0.44], "di": [0.45, 0.46, 0.50], "difc": [0.45, 0.45, 0.47]}
    out = []
    for loss, vals in bal.items():
        for seed, b in enumerate(vals):
            out.append(rec("mcd", loss, seed, b + 0.1, b, [b, b, b, b], order=[3, 2, 1, 0] if loss == "difc" else None))
    return out


def test_paired_claims_table_hand_computed_intervals():
    from fairexpr.evaluation.difc_tables import paired_claims_table

    so = {"ck": {"accuracy": 0.60, "balanced_accuracy": 0.50, "per_class_accuracy": dict(zip(CLASSES, [0.5] * 4))}}
    t = paired_claims_table(_three_seed_records(), CLASSES, source_only=so, top=2)
    row = lambda claim, metric: t[(t.claim == claim) & (t.metric == metric)].iloc[0]  # noqa: E731
    # DI - CE: d = 5, 4, 6 points; mean 5, sd 1, t(0.975, 2) = 4.303 -> half 2.48
    r = row("DI > CE", "balanced_accuracy")
    assert (r.A, r.B) == ("42.00", "47.00")
    assert r["B − A [95 % CI] (points)"] == "+5.00 [+2.52, +7.48] (n=3)" and r.verdict == "**reproduced**"
    # DIFC - DI: d = 0, -1, -3; mean -1.33, sd 1.53 -> half 3.79: not shown
    r = row("DIFC > DI", "balanced_accuracy")
    assert r["B − A [95 % CI] (points)"] == "-1.33 [-5.13, +2.46] (n=3)" and r.verdict == "not shown"
    # the confusing classes come from the DIFC runs' order (d, c first)
    assert "top-2 confusing (d, c)" in set(t.metric)
    # CE adapted - source-only 50: d = -10, -8, -6 -> [-12.97, -3.03]: the opposite of the claim is shown
    r = row("CE adapted > source-only", "balanced_accuracy")
    assert r["B − A [95 % CI] (points)"] == "-8.00 [-12.97, -3.03] (n=3)" and r.verdict == "opposite shown"
    # without source-only metrics there are no such rows
    t2 = paired_claims_table(_three_seed_records(), CLASSES, top=2)
    assert not any("source-only" in c for c in t2.claim)


def test_write_tables_includes_paired_claims_and_source_only(tmp_path):
    from fairexpr.evaluation.difc_tables import write_tables

    so = {"ck": {"accuracy": 0.60, "balanced_accuracy": 0.50, "checkpoint": "default"}}
    paths = write_tables(_three_seed_records(), CLASSES, tmp_path, prefix="x", source_only=so)
    md = paths["markdown"].read_text()
    assert "## paired_claims" in md and "## source_only" in md and "| ck | 60.00 | 50.00 | default |" in md
    assert "paired_claims" in json.loads(paths["json"].read_text())
    assert "## convergence" in md and "no validation" in md  # the hand-made records log no validation


def test_per_class_figure_marks_a_class_the_target_lacks(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from fairexpr.evaluation.difc_tables import make_record, per_class_figure

    classes = ["anger", "happiness", "neutral"]
    recs = [make_record(run=f"r{i}", method="mcd", cls_loss=loss, source="fer2013", target="ckplus:/x/CK+48", seed=i,
                        metrics={"per_class_accuracy": {"anger": 0.5, "happiness": 0.9, "neutral": None}})
            for i, loss in enumerate(("ce", "di"))]
    texts = []
    real = Axes.text
    monkeypatch.setattr(Axes, "text", lambda self, x, y, s, *a, **k: (texts.append((x, s)), real(self, x, y, s, *a, **k))[1])
    p = per_class_figure(recs, classes, tmp_path / "pc.png")
    assert p.is_file() and texts == [(2, "absent")]  # neutral (index 2) only


def _val(method, loss, seed, vals, target="fer:/d/ferplus"):
    hist = [{"epoch": i + 1, "val_balanced_accuracy": v} for i, v in enumerate(vals)]
    return make_record(run=f"{method}-{loss}-{seed}", method=method, cls_loss=loss, source="fer", target=target,
                       seed=seed, metrics=None, history=hist)


def test_convergence_table_counts_seeds_that_liked_their_last_epoch():
    from fairexpr.evaluation.difc_tables import convergence_table

    recs = [  # given out of seed order: the table lists seeds in order
        _val("safn", "ce", 1, [0.61, 0.62, 0.63]),        # best = last (3 of 3)
        _val("safn", "ce", 0, [0.61, 0.64, 0.63]),        # best 2
        _val("safn", "ce", 2, [0.61, 0.60, 0.60]),        # best 1
        _val("safn", "di", 0, [0.61, 0.62, 0.60]),
        _val("safn", "di", 1, [0.63, 0.62, 0.60]),
        _val("mcd", "difc", 0, [0.6, 0.7]),
        make_record(run="r", method="mcd", cls_loss="ce", source="fer", target="fer:/d/ferplus", seed=0,
                    metrics=None, history=[{"epoch": 1}, {"epoch": 2}]),
        _val("dann", "di", 0, [0.6, 0.7]),                  # one seed validated, the other not: said, not hidden
        make_record(run="r2", method="dann", cls_loss="di", source="fer", target="fer:/d/ferplus", seed=1,
                    metrics=None, history=[{"epoch": 1}, {"epoch": 2}]),
    ]
    t = convergence_table(recs)
    assert list(zip(t.method, t.loss)) == [("DANN", "DI"), ("MCD", "CE"), ("MCD", "DIFC"), ("SAFN", "CE"), ("SAFN", "DI")]
    assert t[(t.method == "DANN")].iloc[0]["rule 2"] == "no validation (1 of 2 runs)"
    ce = t[(t.method == "SAFN") & (t.loss == "CE")].iloc[0]
    assert (ce.target, ce.seeds, ce.epochs) == ("ferplus", "0, 1, 2", "3")
    assert ce["best source-val epoch per seed"] == "2, 3, 1" and ce["last epoch best"] == "1 of 3"
    assert ce["last epoch ahead by (points)"] == "s1 +1.00"  # 63 − max(61, 62)
    # seed 1's 61, 62, 63 is a straight climb (tail slope 1.0 point/epoch, zero-width interval): still rising; seeds
    # 0 and 2 have residuals, and with 3 points (t(0.975, 1) = 12.7) their intervals reach below 0
    assert ce["rule 2"] == "not met (1 of 3; last epoch ahead by ≤ 1.00 points); tail still rising on 1 of 3"
    di = t[(t.method == "SAFN") & (t.loss == "DI")].iloc[0]
    assert di["best source-val epoch per seed"] == "2, 1" and di["rule 2"] == "met"
    assert di["last epoch ahead by (points)"] == ""
    assert t[(t.method == "MCD") & (t.loss == "DIFC")].iloc[0]["rule 2"] == "not met (1 of 1; last epoch ahead by ≤ 10.00 points)"
    none = t[(t.method == "MCD") & (t.loss == "CE")].iloc[0]
    assert none["best source-val epoch per seed"] == "–" and none["rule 2"] == "no validation"


def test_convergence_table_reads_the_last_epoch_number_not_the_row_count():
    """A history that skips a row (epochs 1, 2, 4 after a resume) still has 4 as its last epoch: a best epoch of 4
    is the last one. Counting rows would call it 3 and wrongly say 'met'."""
    from fairexpr.evaluation.difc_tables import convergence_table

    hist = [{"epoch": e, "val_balanced_accuracy": v} for e, v in ((1, 0.60), (2, 0.61), (4, 0.65))]
    rec = make_record(run="gap", method="safn", cls_loss="ce", source="fer", target="fer:/d/ferplus", seed=0,
                      metrics=None, history=hist)
    row = convergence_table([rec]).iloc[0]
    assert row.epochs == "4" and row["best source-val epoch per seed"] == "4"
    assert row["last epoch best"] == "1 of 1"
    assert row["rule 2"] == "not met (1 of 1; last epoch ahead by ≤ 4.00 points); tail still rising on 0 of 1"
