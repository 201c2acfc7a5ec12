"""benchmarks/face2exp.py end to end on synthetic faces: SL and Meta-Face2Exp cells at one label fraction and two
seeds, the paired Δ table with intervals and verdicts, the epochs per cell, the command, ``--tag`` file names; a
second invocation reuses the finished cells; bad ``--tag`` and ``--smoke`` into benchmarks/results are refused."""
from __future__ import annotations

import json

import pytest
from _bench import load_bench


@pytest.fixture(scope="module")
def f2e():
    return load_bench("face2exp")


def test_smoke_grid_paired_table_and_reuse(f2e, tmp_path, capsys):
    argv = ["--smoke", "--datasets", "fer2013", "--fractions", "0.1", "--seeds", "0", "1", "--epochs", "1",
            "--minutes", "5", "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "res"), "--tag", "f2e_smoke",
            "--override", "train.batch_size=16", "model.pretrained=null", "method.warmup_steps=1",
            "method.consistency_warmup_steps=1"]  # no ../shared in a clean clone
    assert f2e.main(argv) == 0
    res = tmp_path / "res"
    assert sorted(p.name for p in res.glob("f2e_smoke_*")) == [
        "f2e_smoke_confusion_fer2013_10pct_s0_A.png", "f2e_smoke_confusion_fer2013_10pct_s0_B.png",
        "f2e_smoke_runs.json", "f2e_smoke_tables.json", "f2e_smoke_tables.md"]
    runs = json.loads((res / "f2e_smoke_runs.json").read_text())
    assert runs["meta"]["command"].startswith("python benchmarks/face2exp.py --smoke")
    sl = [r for r in runs["runs"] if r["method"] == "SL"]
    assert sorted(r["seed"] for r in sl) == [0, 1] and all(r["epochs_run"] == 1 and r["best_epoch"] == 1 for r in sl)
    md = (res / "f2e_smoke_tables.md").read_text()
    assert "| 1 (1), 1 (1) |" in md  # epochs (best) per seed
    assert "(n=2)" in md and "Mean Acc claim" in md
    tables = json.loads((res / "f2e_smoke_tables.json").read_text())
    delta = tables["delta_vs_sl"]
    assert "Std Acc claim" in delta["columns"] and len(delta["data"]) >= 2  # B and A at least
    # re-running reuses every finished cell: no training command is printed
    capsys.readouterr()
    assert f2e.main(argv) == 0
    assert "+ " not in "".join(line[:2] for line in capsys.readouterr().out.splitlines())
    # --archive keeps every finished cell with its last-epoch evaluation; a fresh --out trains nothing again
    assert f2e.main([*argv, "--archive", str(tmp_path / "kept")]) == 0
    assert len(list((tmp_path / "kept").glob("*/result.json"))) == 4
    assert len(list((tmp_path / "kept").glob("*/eval/base_last/test/metrics.json"))) == 2
    fresh = [*argv[:argv.index("--out") + 1], str(tmp_path / "fresh"), *argv[argv.index("--out") + 2:]]
    capsys.readouterr()
    assert f2e.main([*fresh, "--archive", str(tmp_path / "kept")]) == 0
    out = capsys.readouterr().out
    assert "restored 4 finished cell(s)" in out and "+ " not in "".join(line[:2] for line in out.splitlines())
    assert json.loads((res / "f2e_smoke_tables.json").read_text()) == tables
    capsys.readouterr()
    assert f2e.main([*argv, "--seeds", "0", "1", "2", "--status"]) == 0
    out = capsys.readouterr().out
    assert out.count(": finished\n") == 4 and out.count(": not started") == 2 and "4 of 6 cells finished" in out
    sl_only = [a for a in argv if not a.startswith("method.")] + ["--methods", "sl", "--status"]
    assert f2e.main(sl_only) == 0  # SL cells only; SL drops method.* overrides, so they are the same, finished cells
    out = capsys.readouterr().out
    assert out.count("pct_sl_s") == 2 and "pct_face2exp" not in out and "2 of 2 cells finished" in out


def test_bad_tag_and_smoke_into_results_are_refused(f2e, tmp_path, capsys):
    with pytest.raises(SystemExit):
        f2e.main(["--smoke", "--results", str(tmp_path), "--tag", "../x"])
    assert "--tag '../x': expected a file-name prefix" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        f2e.main(["--smoke"])
    assert "--smoke numbers are meaningless" in capsys.readouterr().err


def test_an_override_only_meta_face2exp_uses_is_refused_with_sl_alone(f2e, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        f2e.main(["--smoke", "--results", str(tmp_path / "res"), "--out", str(tmp_path / "runs"), "--methods", "sl",
                  "--override", "method.feedback=0.5", "optim.lr=1e-3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--override method.feedback=0.5: only the Meta-Face2Exp runs use it, and --methods is sl" in err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


def test_smoke_cells_into_the_repository_archive_are_refused(f2e, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        f2e.main(["--smoke", "--results", str(tmp_path / "res"), "--out", str(tmp_path / "runs"),
                  "--archive", "benchmarks/results/cells/x"])
    assert e.value.code == 2 and "--smoke cells are meaningless: pass --archive to a scratch folder" in capsys.readouterr().err
