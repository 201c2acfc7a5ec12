"""benchmarks/difc.py --init RUN at toy size, end to end: every cell starts from the source run, the source model
itself is evaluated on the target once (source-only row), and the paired claims table is written under --tag."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))

from _bench import load_bench  # noqa: E402
from test_adapt_engine import domains, tiny_overrides  # noqa: E402,F401


def _train_source(src: str, out: Path) -> Path:
    """A registered network (the cells run as subprocesses, where the tests' tiny network is unknown)."""
    from fairexpr.config import load_config
    from fairexpr.engine import fit

    cfg = load_config(None, [f"data.train={src}", "data.train_split=null", "model.name=mobilenet_v2",
                             "model.kwargs={small_input: true, width_mult: 0.25}", "data.image_size=16",
                             "data.channels=1", "train.epochs=1", "train.batch_size=16", "train.progress=false",
                             "train.eval_batch_size=64"])
    fit(cfg, out)
    return out


def test_difc_bench_from_a_source_run(domains, tmp_path, monkeypatch, capsys):  # noqa: F811
    src, tgt = domains
    monkeypatch.setenv("FAIREXPR_DATA", str(tmp_path))
    source_run = _train_source(src, tmp_path / "source")
    difc = load_bench("difc", "difc_bench_init")
    over = [o for o in tiny_overrides("mcd", 1) if not o.startswith(("model.name=", "data.image_size=", "data.channels=", "train.epochs=",
                                                                     "method.cls_loss="))]
    res, out = tmp_path / "results", tmp_path / "cells"
    argv = ["--source", src, "--target", tgt, "--init", str(source_run), "--methods", "mcd", "--losses", "ce", "di",
            "--seeds", "0", "1", "--epochs", "2", "--iters", "2", "--t1", "1", "--out", str(out), "--results", str(res),
            "--tag", "toy_init", "--override", *over, "method.num_k=1"]
    assert difc.main(argv) == 0
    runs = json.loads((res / "toy_init_runs.json").read_text())
    assert runs["meta"]["init"] == str(source_run) and len(runs["runs"]) == 4
    assert runs["meta"]["command"] == "python benchmarks/difc.py " + shlex.join(argv)  # the exact command, recorded
    assert all(r["best_val_epoch"] is None and r["epochs_run"] == 2 for r in runs["runs"])  # no validation split here
    so = runs["meta"]["source_only"][tgt]
    assert 0.0 <= so["accuracy"] <= 1.0 and so["n"] > 0
    md = (res / "toy_init_tables.md").read_text()
    assert "## paired_claims" in md and "CE adapted > source-only" in md and "DI > CE" in md
    assert f"Every cell starts from `{source_run}`" in md and "Command: `python benchmarks/difc.py --source" in md
    assert "## convergence" in md and "| MCD | " in md and "no validation" in md  # rule 2 per cell, stated
    assert not (res / "difc_runs.json").exists()  # --tag names every results file
    # a second call reuses every cell and the source-only evaluation (nothing is re-run)
    stamps = {p: p.stat().st_mtime for p in out.glob("*/result.json")} | {p: p.stat().st_mtime
                                                                          for p in out.glob("source_only_*/metrics.json")}
    assert len(stamps) == 5
    assert difc.main(argv) == 0
    assert all(p.stat().st_mtime == t for p, t in stamps.items())
    # --archive: the finished cells are kept (with --collect too) and a fresh --out gets them back, nothing retrained
    tables = json.loads((res / "toy_init_tables.json").read_text())
    assert difc.main([*argv, "--collect", "--archive", str(tmp_path / "kept")]) == 0
    assert len(list((tmp_path / "kept").glob("*/result.json"))) == 4
    fresh = [*argv[:argv.index("--out") + 1], str(tmp_path / "fresh"), *argv[argv.index("--out") + 2:]]
    assert difc.main([*fresh, "--archive", str(tmp_path / "kept")]) == 0
    assert not list((tmp_path / "fresh").glob("*/last.json"))  # restored, not trained
    assert len(list((tmp_path / "fresh").glob("*/restored_from_archive.json"))) == 4
    assert json.loads((res / "toy_init_tables.json").read_text()) == tables
    capsys.readouterr()
    assert difc.main([*argv, "--status"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("4 of 4 cells finished")


@pytest.mark.parametrize("argv, says", [
    (["--tag", "../x"], "--tag '../x': letters, digits, '_' and '-' only"),
    (["--collect", "--shard", "1/2"], "--shard 1/2 splits the cells to run; --collect builds the tables from every "
                                      "shard's cells: drop --shard"),
    (["--status", "--collect"], "--status lists every cell and stops: it takes no --collect or --shard"),
])
def test_difc_bench_refuses_bad_options_in_one_line(capsys, argv, says):
    difc = load_bench("difc", "difc_bench_tag")
    with pytest.raises(SystemExit) as e:
        difc.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
