"""CUCN reports: Table II shape and Fig. 4 from run directories."""
import json
import math

import pandas as pd
import pytest

from fairexpr.checkpoint import CheckpointError
from fairexpr.evaluation.cucn_tables import main, per_class_table, plot_fig4, table2, table2_markdown, write_report


def _run(root, name, per_class, acc, split="test"):
    d = root / name / "eval" / split
    d.mkdir(parents=True)
    vals = [v for v in per_class.values() if v is not None]
    m = {"n": 100, "accuracy": acc, "balanced_accuracy": sum(vals) / len(vals), "per_class_accuracy": per_class,
         "per_class_accuracy_min": min(vals), "per_class_accuracy_max": max(vals),
         "per_class_accuracy_gap": max(vals) - min(vals)}
    (d / "metrics.json").write_text(json.dumps(m))
    return root / name


@pytest.fixture
def runs(tmp_path):
    a = _run(tmp_path, "resnet18_ce", {"anger": 0.5, "disgust": 0.37, "happiness": 0.93}, 0.70)
    b = _run(tmp_path, "cucn", {"anger": 0.6, "disgust": 0.55, "happiness": 0.84}, 0.72)
    return [a, b]


def test_table2_rows_and_markdown(runs):
    df = table2(runs)
    assert list(df["run"]) == ["resnet18_ce", "cucn"]
    assert df.loc[0, "max_class_acc"] == 0.93 and df.loc[0, "min_class_acc"] == 0.37
    assert df.loc[1, "gap"] == pytest.approx(0.29) and df.loc[1, "accuracy"] == 0.72
    assert df.loc[1, "balanced_accuracy"] == pytest.approx((0.6 + 0.55 + 0.84) / 3)
    md = table2_markdown(df)
    assert "| resnet18_ce | 93.0 | 37.0 | 70.0 | 60.0 | 56.0 | 100 |" in md
    assert md.count("\n") == 4


def test_per_class_table_aligns_classes(tmp_path, runs):
    extra = _run(tmp_path, "other", {"happiness": 0.9, "contempt": 0.1}, 0.5)
    pc = per_class_table({"a": runs[0], "b": extra})
    assert list(pc.columns) == ["anger", "disgust", "happiness", "contempt"]
    assert math.isnan(pc.loc["a", "contempt"]) and math.isnan(pc.loc["b", "anger"])
    assert pc.loc["b", "happiness"] == 0.9


def test_fig4_and_report_files(tmp_path, runs):
    p = plot_fig4({"CE": runs[0], "CUCN": runs[1]}, tmp_path / "fig.png")
    assert p.read_bytes()[:4] == b"\x89PNG"
    out = write_report(runs, tmp_path / "rep")
    assert pd.read_csv(out["table2_csv"])["run"].tolist() == ["resnet18_ce", "cucn"]
    assert out["fig4"].stat().st_size > 1000
    assert main([str(r) for r in runs] + ["--out", str(tmp_path / "cli"), "--names", "x,y"]) == 0
    assert "| x |" in (tmp_path / "cli" / "table2.md").read_text()


def test_missing_evaluation_names_the_file(tmp_path, runs):
    with pytest.raises(CheckpointError, match=r"eval/val/metrics.json.*evaluated: test"):
        table2(runs, split="val")
    (tmp_path / "bad" / "eval" / "test").mkdir(parents=True)
    (tmp_path / "bad" / "eval" / "test" / "metrics.json").write_text(json.dumps({"accuracy": 0.5}))
    with pytest.raises(CheckpointError, match="lacks"):
        table2([tmp_path / "bad"])
