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
