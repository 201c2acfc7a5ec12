"""benchmarks/compare_cells.py: two runs of one cell compared number by number (metrics.csv without its timing
columns, every number of each eval role); identical -> 0, a difference -> 1 with the column and first epoch, missing
epochs or roles -> 1, bad input -> 2 with one line."""
from __future__ import annotations

import json

import pytest
from _bench import load_bench

HEADER = "epoch,lr,train_images_per_s,train_loss,val_balanced_accuracy,elapsed_s\n"


def _cell(root, name="c_s0_0123456789", rows=((1, 0.1, 700.0, 1.5, 0.40, 36.0), (2, 0.05, 710.0, 1.2, 0.45, 72.0)),
          test=None):
    d = root / name
    (d / "eval" / "test").mkdir(parents=True)
    (d / "metrics.csv").write_text(HEADER + "".join(",".join(str(v) for v in r) + "\n" for r in rows))
    (d / "eval" / "test" / "metrics.json").write_text(json.dumps(
        test or {"accuracy": 0.5, "per_class": {"anger": {"recall": 0.25}}, "note": "text is not compared"}))
    return d


@pytest.fixture(scope="module")
def cc():
    return load_bench("compare_cells")


def test_identical_runs_and_timing_columns_ignored(cc, tmp_path, capsys):
    a = _cell(tmp_path / "a")
    b = _cell(tmp_path / "b", rows=((1, 0.1, 650.0, 1.5, 0.40, 50.0), (2, 0.05, 640.0, 1.2, 0.45, 99.0)))  # slower machine
    assert cc.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("identical") and "10 numbers compared" in out  # 2 epochs x 4 columns + 2 eval numbers
    assert "train_images_per_s" not in out and "elapsed_s" not in out


def test_a_difference_names_its_column_and_first_epoch(cc, tmp_path, capsys):
    a = _cell(tmp_path / "a")
    b = _cell(tmp_path / "b", rows=((1, 0.1, 700.0, 1.5, 0.40, 36.0), (2, 0.05, 710.0, 1.2, 0.4525, 72.0)))
    assert cc.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "first difference: epoch 2, val_balanced_accuracy (0.0025)" in out and out.rstrip().endswith("DIFFERENT")
    assert cc.main([str(a), str(b), "--tol", "0.01"]) == 0  # within a looser tolerance
    capsys.readouterr()
    c = _cell(tmp_path / "c", test={"accuracy": 0.5, "per_class": {"anger": {"recall": 0.30}}})
    r = cc.compare(a, c)
    assert not r["identical"] and abs(r["roles"]["test"] - 0.05) < 1e-12 and r["first"] is None


def test_missing_epochs_roles_and_numbers_count_as_different(cc, tmp_path):
    a = _cell(tmp_path / "a")
    short = _cell(tmp_path / "b", rows=((1, 0.1, 700.0, 1.5, 0.40, 36.0),))  # cut off after epoch 1
    r = cc.compare(a, short)
    assert r["epochs"] == (2, 1) and not r["identical"]
    (a / "eval" / "val").mkdir()
    (a / "eval" / "val" / "metrics.json").write_text('{"accuracy": 0.4}')
    r = cc.compare(a, _cell(tmp_path / "c"))
    assert any("eval role val (only in" in o for o in r["only"]) and not r["identical"]
    d = _cell(tmp_path / "d", test={"accuracy": 0.5})  # a number only one side has
    assert cc.compare(_cell(tmp_path / "e"), d)["roles"]["test"] == float("inf")


def test_bad_input_is_one_line(cc, tmp_path, capsys):
    a = _cell(tmp_path / "a")
    with pytest.raises(SystemExit) as e:
        cc.main([str(a), str(tmp_path / "none")])
    assert e.value.code == 2 and "none: not a folder (expected a cell folder holding metrics.csv)" in capsys.readouterr().err
    (tmp_path / "empty" / a.name).mkdir(parents=True)
    with pytest.raises(SystemExit) as e:
        cc.main([str(a), str(tmp_path / "empty" / a.name)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "metrics.csv: not found" in err and "Traceback" not in err
    bad = _cell(tmp_path / "bad")
    (bad / "metrics.csv").write_text("loss\n1.0\n")
    with pytest.raises(SystemExit) as e:
        cc.main([str(a), str(bad)])
    assert e.value.code == 2 and "expected a header with an 'epoch' column" in capsys.readouterr().err
