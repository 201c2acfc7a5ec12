"""eval / calibrate account for every image of the split they do not use (protocol exclusions, classes the
model lacks, skipped files, rows without a label), and eval refuses to pool a dataset's splits."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from fairexpr.cli import main


def run(argv, capsys):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture()
def ckpt(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))
    from zoo_helpers import tiny_checkpoint

    return tiny_checkpoint(tmp_path / "run")


def manifest(tmp_path, rows):
    rng = np.random.default_rng(0)
    for name, _, _ in rows:
        if name != "broken.png":
            Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    m = tmp_path / "m.csv"
    with open(m, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerows(rows)
    return m


def test_every_exclusion_is_counted_listed_and_printed(ckpt, tmp_path, capsys):
    rows = [("a.png", "happy", "test"), ("b.png", "sad", "test"), ("c.png", "contempt", "test"),
            ("d.png", "", "test"), ("broken.png", "angry", "test"), ("e.png", "fear", "train")]
    m = manifest(tmp_path, rows)
    rc, out, err = run(["eval", "--checkpoint", ckpt, "--data", f"csv:{m}", "--split", "test", "--on-bad-file", "skip",
                        "--out", tmp_path / "ev", "--json"], capsys)
    assert rc == 0, err
    res = json.loads(out)
    ex = res["exclusions"]
    assert res["n"] == 2 and ex["total"] == 3
    assert ex["by_reason"]["class 'contempt' is not one of the model's classes"] == 1
    assert ex["by_reason"]["no label"] == 1
    bad = [r for r in ex["by_reason"] if r not in ("no label", "class 'contempt' is not one of the model's classes")]
    assert len(bad) == 1 and ex["by_reason"][bad[0]] == 1
    listed = list(csv.DictReader(open(ex["files"])))
    assert [r["path"].endswith("broken.png") for r in listed] == [True]
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["exclusions"] == ex
    rc, out, _ = run(["eval", "--checkpoint", ckpt, "--data", f"csv:{m}", "--split", "test", "--on-bad-file", "skip",
                      "--out", tmp_path / "ev2"], capsys)
    assert "excluded 3 image(s) of the split:" in out and "no label" in out and "excluded.csv" in out


def test_eval_without_split_refuses_to_pool_splits(ckpt, tmp_path, capsys):
    m = manifest(tmp_path, [("a.png", "happy", "test"), ("e.png", "fear", "train")])
    rc, _, err = run(["eval", "--checkpoint", ckpt, "--data", f"csv:{m}"], capsys)
    assert rc == 2 and "has splits test, train; give one (--split NAME)" in err and "Traceback" not in err


def test_calibrate_takes_adapter_options_and_reports_exclusions(ckpt, tmp_path, capsys):
    rows = [("a.png", "happy", "test"), ("b.png", "sad", "test"), ("c.png", "contempt", "test")]
    m = manifest(tmp_path, rows)
    rc, out, err = run(["calibrate", "--checkpoint", ckpt, "--data", f"csv:{m}", "--split", "test", "--no-progress",
                        "--option", "bogus_option=1"], capsys)
    assert rc == 2 and "bogus_option" in err
    rc, out, err = run(["calibrate", "--checkpoint", ckpt, "--data", f"csv:{m}", "--split", "test", "--no-progress"], capsys)
    assert rc == 0, err
    assert "excluded 1 image(s) of the split:" in out and "class 'contempt' is not one of the model's classes" in out
    assert err == ""  # --no-progress: no bar on stderr


def test_export_eval_data_counts_its_exclusions_and_checks_its_flags(ckpt, tmp_path, capsys):
    rows = [("a.png", "happy", "test"), ("b.png", "sad", "test"), ("c.png", "contempt", "test"), ("d.png", "", "test")]
    m = manifest(tmp_path, rows)
    rc, out, err = run(["export", "--checkpoint", ckpt, "--onnx", tmp_path / "m.onnx", "--eval-data", f"csv:{m}",
                        "--eval-split", "test", "--json"], capsys)
    assert rc == 0, err
    ev = json.loads(out)["eval"]
    assert ev["n"] == 2 and ev["exclusions"]["total"] == 2
    assert ev["exclusions"]["by_reason"] == {"class 'contempt' is not one of the model's classes": 1, "no label": 1}
    rc, out, err = run(["export", "--checkpoint", ckpt, "--onnx", tmp_path / "m2.onnx", "--eval-data", f"csv:{m}",
                        "--eval-split", "test"], capsys)
    assert rc == 0 and "excluded 2 image(s)" in out and "decoding csv:" in err
    rc, out, err = run(["export", "--checkpoint", ckpt, "--onnx", tmp_path / "m3.onnx", "--eval-data", f"csv:{m}",
                        "--eval-split", "test", "--no-progress"], capsys)
    assert rc == 0 and "decoding" not in err
    rc, out, err = run(["export", "--checkpoint", ckpt, "--onnx", tmp_path / "m4.onnx", "--eval-split", "test"], capsys)
    assert rc == 2 and "--eval-split is only used with --eval-data" in err and "Traceback" not in err


def test_eval_no_progress_hides_the_decoding_bar(ckpt, tmp_path, capsys, monkeypatch):
    m = manifest(tmp_path, [("a.png", "happy", "test"), ("b.png", "sad", "test")])
    shown = []
    for i, flags in enumerate(([], ["--no-progress"])):
        monkeypatch.setenv("FAIREXPR_CACHE", str(tmp_path / f"cache{i}"))  # decode afresh each time
        rc, out, err = run(["eval", "--checkpoint", ckpt, "--data", f"csv:{m}", "--split", "test", "--out",
                            tmp_path / f"ev{i}", *flags], capsys)
        assert rc == 0, err
        shown.append("decoding" in err)
    assert shown == [True, False]
