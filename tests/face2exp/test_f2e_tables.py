"""Face2Exp report tables (Mean Acc / Std Acc over per-class accuracies, seeds, label fractions) and the
side-by-side confusion figure, from run directories shaped like `fairexpr train` output."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from fairexpr.evaluation.face2exp_tables import (delta_table, load_run, load_runs, mean_std_table, per_class_table,
                                                 plot_confusion_pair, run_summary, to_markdown)
from fairexpr.evaluation.metrics import _json, evaluate

CLASSES = ["anger", "disgust", "happiness"]


def write_run(root: Path, name: str, method: str, frac: float, seed: int, y_true, y_pred) -> Path:
    d = root / name
    (d / "eval" / "test").mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "method": {"name": method},
                                                   "data": {"train": "fer2013:/x", "train_split": "train",
                                                            "label_fraction": frac}}))
    m = evaluate(np.asarray(y_true), None, CLASSES, y_pred=np.asarray(y_pred))
    (d / "eval" / "test" / "metrics.json").write_text(json.dumps(_json(m)))
    return d


Y = [0, 0, 1, 1, 2, 2]


@pytest.fixture()
def runs(tmp_path):
    out = []
    # SL: per-class accuracies (1, 0.5, 0) -> Mean 0.5, Std sqrt(1/6); and (1, 0, 0.5) for seed 1
    out.append(write_run(tmp_path, "sl0", "supervised", 0.1, 0, Y, [0, 0, 1, 0, 0, 0]))
    out.append(write_run(tmp_path, "sl1", "supervised", 0.1, 1, Y, [0, 0, 0, 0, 2, 0]))
    # Meta-Face2Exp: (1, 0.5, 0.5) -> Mean 2/3, Std sqrt(1/18); (1, 1, 0.5) -> Mean 5/6, Std sqrt(1/18)
    out.append(write_run(tmp_path, "f0", "face2exp", 0.1, 0, Y, [0, 0, 1, 0, 2, 0]))
    out.append(write_run(tmp_path, "f1", "face2exp", 0.1, 1, Y, [0, 0, 1, 1, 2, 0]))
    out.append(write_run(tmp_path, "f5", "face2exp", 0.05, 0, Y, [0, 0, 1, 1, 2, 2]))
    return out


def test_run_summary_hand_computed(runs):
    s = run_summary(load_run(runs[0])["metrics"])
    assert s["mean_acc"] == pytest.approx(0.5) and s["std_acc"] == pytest.approx(math.sqrt(1 / 6))
    assert s["accuracy"] == pytest.approx(0.5)
    assert run_summary({"accuracy": 1.0, "per_class_accuracy": {"a": 1.0, "b": None}})["std_acc"] == 0.0


def test_mean_std_table_groups_cells_and_aggregates_seeds(runs):
    recs = load_runs(runs)
    assert {r["method"] for r in recs} == {"SL", "Meta-Face2Exp"}
    t = mean_std_table(recs, as_text=False)
    assert list(zip(t["labels"], t["method"], t["seeds"])) == [("5%", "Meta-Face2Exp", 1), ("10%", "SL", 2),
                                                               ("10%", "Meta-Face2Exp", 2)]
    sl = t[(t["labels"] == "10%") & (t["method"] == "SL")].iloc[0]
    assert sl["Mean Acc"] == pytest.approx(0.5) and sl["Std Acc"] == pytest.approx(math.sqrt(1 / 6))
    f = t[(t["labels"] == "10%") & (t["method"] == "Meta-Face2Exp")].iloc[0]
    assert f["Mean Acc"] == pytest.approx((2 / 3 + 5 / 6) / 2) and f["Std Acc"] == pytest.approx(math.sqrt(1 / 18))
    text = mean_std_table(recs)
    cell = text[(text["labels"] == "10%") & (text["method"] == "Meta-Face2Exp")].iloc[0]["Mean Acc"]
    assert cell == "75.00 ± 8.33"  # mean 75 %, population std over the two seeds 8.33 points
    assert set(text["epochs (best)"]) == {"–", "–, –"}  # no result.json in these runs
    md = to_markdown(text)
    assert md.splitlines()[0].startswith("| train | labels | method |") and "Std Acc" in md


def test_delta_and_per_class_tables(runs):
    recs = load_runs(runs)
    d = delta_table(recs)
    assert len(d) == 1 and d.iloc[0]["seeds"] == 2  # the 5 % cell has no SL partner
    assert d.iloc[0]["Mean Acc up, seeds"] == "2/2" and d.iloc[0]["Std Acc down, seeds"] == "2/2"
    # paired by seed: Mean Acc differences 1/6 and 1/3 -> mean 25.00, sd (n-1) 11.785, t_{0.975,1} = 12.706
    # -> half width 105.885 points; Std Acc differences sqrt(1/18) - sqrt(1/6) = -17.25 for both seeds (sd 0)
    assert d.iloc[0]["Δ Mean Acc"] == "+25.00 [-80.89, +130.89] (n=2)"
    assert d.iloc[0]["Mean Acc claim"] == "not shown"
    assert d.iloc[0]["Δ Std Acc"] == "-17.25 [-17.25, -17.25] (n=2)"
    assert d.iloc[0]["Std Acc claim"] == "**reproduced**"
    worse = [dict(r, method="SL" if r["method"] == "Meta-Face2Exp" else "Meta-Face2Exp") for r in recs]
    assert delta_table(worse).iloc[0]["Std Acc claim"] == "opposite shown"
    pc = per_class_table(recs)
    assert list(pc.columns[-3:]) == CLASSES
    assert pc[(pc["labels"] == "10%") & (pc["method"] == "SL")].iloc[0]["happiness"] == "25.0 ± 25.0"


def test_confusion_pair_figure(runs, tmp_path):
    a, b = load_run(runs[0]), load_run(runs[2])
    p = plot_confusion_pair(a, b, tmp_path / "fig" / "pair.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    bad = json.loads(json.dumps(b))
    bad["metrics"]["per_class_accuracy"] = {"x": 1.0}
    with pytest.raises(ValueError, match="class lists"):
        plot_confusion_pair(a, bad, tmp_path / "bad.png")


def test_missing_metrics_file_is_named(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        load_run(tmp_path / "run")


def test_epochs_and_best_epoch_come_from_result_json(runs):
    for i, d in enumerate(runs[:2]):
        (d / "result.json").write_text(json.dumps({"epochs_run": 20, "best_epoch": 14 + i}))
    (runs[2] / "result.json").write_text(json.dumps({"epochs_run": 20}))
    recs = load_runs(runs)
    assert recs[0]["epochs_run"] == 20 and recs[0]["best_epoch"] == 14
    t = mean_std_table(recs)
    assert t[(t["labels"] == "10%") & (t["method"] == "SL")].iloc[0]["epochs (best)"] == "20 (14), 20 (15)"
    assert t[(t["labels"] == "10%") & (t["method"] == "Meta-Face2Exp")].iloc[0]["epochs (best)"] == "20 (–), –"


def test_rule2_column_reads_the_validation_curve_in_result_json(runs):
    """SL seed 0 keeps its last epoch, 0.3 points above its best earlier one; seed 1 turned: not met (1 of 2)."""
    h0 = [{"epoch": e, "val_balanced_accuracy": v} for e, v in ((1, 0.40), (2, 0.50), (3, 0.503))]
    h1 = [{"epoch": e, "val_balanced_accuracy": v} for e, v in ((1, 0.40), (2, 0.52), (3, 0.51))]
    (runs[0] / "result.json").write_text(json.dumps({"epochs_run": 3, "best_epoch": 3, "history": h0}))
    (runs[1] / "result.json").write_text(json.dumps({"epochs_run": 3, "best_epoch": 2, "history": h1}))
    t = mean_std_table(load_runs(runs))
    sl = t[(t["labels"] == "10%") & (t["method"] == "SL")].iloc[0]
    assert sl["epochs (best)"] == "3 (3, last +0.30), 3 (2)"
    assert sl["rule 2"] == "not met (1 of 2; last epoch ahead by ≤ 0.30 points); tail still rising on 0 of 2"
    assert t[(t["labels"] == "10%") & (t["method"] == "Meta-Face2Exp")].iloc[0]["rule 2"] == "–"  # no result.json
