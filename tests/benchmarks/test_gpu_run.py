"""benchmarks/gpu/run.sh at toy size on the CPU: the very commands the lent GPU will run (recipes, models, input sizes,
process layout, tables, paired verdicts), on synthetic faces with 2 steps per cell, so the first real run cannot
fail on a typo; and its refusals (no CUDA without --toy, unknown arguments, --toy without a scratch folder)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu" / "run.sh"


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("OUT", "SEEDS", "GPU_MINUTES")}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env={**e, "PYTHON": sys.executable, **env},
                          capture_output=True, text=True, timeout=1500)


def test_toy_run_writes_tables_and_paired_verdicts(tmp_path):
    out = tmp_path / "gpu"
    r = _run(["--toy"], OUT=str(out), SEEDS="0 1")
    logs = "".join(p.read_text()[-1500:] for p in sorted(out.glob("*.log")) if "Error" in p.read_text())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:] + logs
    res = out / "results"
    v = json.loads((res / "gpu_verdicts.json").read_text())
    assert v["difc"]["cells"] == 6 and v["grefel"]["cells"] == 4  # 3 losses x 2 seeds; no RB / RB x 2 seeds
    assert v["difc"]["difc_phase_reached"] == {"0": 2, "1": 2}  # every DIFC cell got past the DI phase
    assert v["difc"]["difc-di/accuracy"]["n"] == 2 and v["grefel"]["rb-norb/accuracy"]["n"] == 2
    for name in ("difc_tables.md", "grefel_tables.md", "gpu_verdicts.md"):
        assert (res / name).is_file(), name
    runs = json.loads((res / "difc_runs.json").read_text())["runs"]
    assert all(r["best_epoch"] is not None and r["epochs_run"] == 2 for r in runs)
    assert "DIFC − DI" in (res / "gpu_verdicts.md").read_text()


def test_refusals(tmp_path):
    r = _run(["--bogus"])
    assert r.returncode == 2 and "unknown argument '--bogus'" in r.stderr
    r = _run(["--toy"])
    assert r.returncode != 0 and "set OUT=" in r.stderr
    import torch

    if not torch.cuda.is_available():
        r = _run([], FAIREXPR_DATA=str(tmp_path), OUT=str(tmp_path / "o"))
        assert r.returncode == 2 and "no CUDA device here" in r.stderr
        # the preflight lists every problem before anything starts: here also each dataset the run reads
        assert f"DIFC source: fer2013:{tmp_path}/fer2013@train: fer2013: path" in r.stderr
        assert "DIFC target: ckplus:" in r.stderr and "GReFEL test: ferplus:" in r.stderr
        assert "nothing was started" in r.stderr and "Traceback" not in r.stderr
        assert not list((tmp_path / "o").glob("*.log"))  # no cell process was launched


def test_paired_report_survives_cells_without_a_partner(tmp_path):
    """A failed cell leaves one side of a comparison without seeds: the report says so instead of stopping."""
    from _bench import load_bench

    mod = load_bench("gpu/paired")
    res = tmp_path / "res"
    res.mkdir()
    m = {"accuracy": 0.5, "balanced_accuracy": 0.4}
    runs = [{"cls_loss": "ce", "seed": 0, "metrics": m, "difc_phase_reached": 1},
            {"cls_loss": "di", "seed": 0, "metrics": {"accuracy": 0.6, "balanced_accuracy": 0.45}, "difc_phase_reached": 1},
            {"cls_loss": "ce", "seed": 1, "metrics": m, "difc_phase_reached": 1},
            {"cls_loss": "di", "seed": 1, "metrics": {"accuracy": 0.7, "balanced_accuracy": 0.55}, "difc_phase_reached": 1}]
    (res / "difc_runs.json").write_text(json.dumps({"runs": runs}))
    assert mod.main(["--out", str(tmp_path), "--results", str(res), "--seeds", "0", "1"]) == 0
    v = json.loads((res / "gpu_verdicts.json").read_text())
    assert abs(v["difc"]["di-ce/accuracy"]["mean"] - 0.15) < 1e-12 and v["difc"]["di-ce/accuracy"]["n"] == 2
    assert v["difc"]["difc-di/accuracy"]["n"] == 0 and "no seed" in v["difc"]["difc-di/accuracy"]["verdict"]
    assert v["difc"]["difc_phase_reached"] == {} and "no GReFEL cell finished" in (res / "gpu_verdicts.md").read_text()


def test_preflight_knows_every_dependency_and_lists_every_problem(tmp_path, monkeypatch, capsys):
    import tomllib

    from _bench import load_bench

    pf = load_bench("gpu/preflight")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {d.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower() for d in deps}
    assert names == set(pf.IMPORTS)  # a dependency added to pyproject.toml must be checked here too
    assert pf.main([]) == 0 and "[preflight] ok" in capsys.readouterr().out  # this environment has them all
    monkeypatch.setitem(pf.IMPORTS, "nopkg-x", ("nopkg_x", "nopkg.y"))
    assert pf.main(["--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "package nopkg-x: none of nopkg_x, nopkg.y imports" in err and "1 problem(s)" in err
    monkeypatch.delitem(pf.IMPORTS, "nopkg-x")
    (tmp_path / "ckplus" / "CK+48").mkdir(parents=True)  # a folder without the CK+48 layout
    assert pf.main(["--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "CK+48 has no class folders" in err and err.count("does not exist") == 4 and "5 problem(s)" in err
    assert pf.main(["--data", str(tmp_path / "none")]) == 2
    assert "not a folder (expected the datasets folder" in capsys.readouterr().err


def test_preflight_passes_on_the_shared_data():
    data = os.environ.get("FAIREXPR_DATA")
    if not data or not Path(data).is_dir():
        import pytest

        pytest.skip("FAIREXPR_DATA is not set; real-data tests need the shared FER datasets")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu" / "preflight.py"), "--data", data],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "DIFC source: fer2013:" in r.stdout and "28709 images" in r.stdout and "GReFEL test: ferplus:" in r.stdout
