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
