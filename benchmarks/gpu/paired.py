"""The verdicts of benchmarks/gpu/run.sh: paired per-seed differences with 95 % t intervals (docs/benchmarks.md rule 3)
from the run records the two benchmarks wrote (``difc_runs.json``, ``grefel_runs.json`` in ``--results``):

* DIFC on the target: DI − CE, DIFC − DI, DIFC − CE (accuracy, balanced accuracy), and the DIFC phase each cell reached
  (a cell that never left the DI phase cannot test DIFC: the H100 run of 2026-11 failed exactly so);
* GReFEL on the test split: RB − no RB (accuracy, balanced accuracy, macro-F1).

Writes ``gpu_verdicts.{json,md}`` into ``--results``.

    python benchmarks/gpu/paired.py --out benchmarks/runs/gpu --results benchmarks/results/gpu --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from fairexpr._io import atomic_write_text  # noqa: E402


def by_seed(records: list[dict], cls_loss: str, metric: str) -> dict[int, float]:
    """``{seed: metrics[metric]}`` of the DIFC cells with this classification loss."""
    return {int(r["seed"]): float(r["metrics"][metric]) for r in records
            if r.get("cls_loss") == cls_loss and isinstance(r.get("metrics"), dict) and r["metrics"].get(metric) is not None}


def pair(a: dict[int, float], b: dict[int, float]) -> tuple[dict, str]:
    """``paired_difference(a, b)`` and its table text; cells with no seed in common (a failed or unfinished cell) are
    reported as such instead of stopping the report."""
    from fairexpr.evaluation.stats import format_difference, paired_difference

    try:
        d = paired_difference(a, b)
    except ValueError as e:
        return {"n": 0, "verdict": f"not computed: {e}", "seeds_a": sorted(a), "seeds_b": sorted(b)}, "—"
    return d, format_difference(d)


def main(argv: list[str] | None = None) -> int:

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the run folder of run.sh (for the record only)")
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", required=True)
    a = ap.parse_args(argv)
    rep: dict = {"out": str(a.out), "seeds": a.seeds, "difc": {}, "grefel": {}}
    md = ["# GPU run: paired per-seed differences (95 % t intervals)", ""]
    difc_p = a.results / "difc_runs.json"
    if difc_p.is_file():
        runs = json.loads(difc_p.read_text())["runs"]
        rep["difc"]["cells"] = len(runs)
        md += [f"## DIFC (MCD, {len(runs)} finished cells)", "", "| comparison | metric | difference (points) | verdict |",
               "|---|---|---|---|"]
        for lo, hi in (("ce", "di"), ("di", "difc"), ("ce", "difc")):
            for m in ("accuracy", "balanced_accuracy"):
                d, text = pair(by_seed(runs, lo, m), by_seed(runs, hi, m))
                rep["difc"][f"{hi}-{lo}/{m}"] = d
                md.append(f"| {hi.upper()} − {lo.upper()} | {m} | {text} | {d['verdict']} |")
        reached = {r["seed"]: r.get("difc_phase_reached") for r in runs if r["cls_loss"] == "difc"}
        rep["difc"]["difc_phase_reached"] = reached
        md += ["", "DIFC phase reached per seed (2 = the margins were updated): "
               + (", ".join(f"seed {s}: {p}" for s, p in sorted(reached.items())) or "no DIFC cell finished"), ""]
    else:
        md += ["## DIFC", "", f"no {difc_p.name}: no DIFC cell finished", ""]
    grefel_p = a.results / "grefel_runs.json"
    if grefel_p.is_file():
        runs = json.loads(grefel_p.read_text())["runs"]
        rep["grefel"]["cells"] = len(runs)
        md += [f"## GReFEL (RB head, {len(runs)} finished cells)", "", "| comparison | metric | difference (points) | verdict |",
               "|---|---|---|---|"]
        for m in ("accuracy", "balanced_accuracy", "macro_f1"):
            d, text = pair({int(r["seed"]): float(r[m]) for r in runs if r["rb"] == "without RB" and r.get(m) is not None},
                           {int(r["seed"]): float(r[m]) for r in runs if r["rb"] == "anchors + MHSA" and r.get(m) is not None})
            rep["grefel"][f"rb-norb/{m}"] = d
            md.append(f"| RB − no RB | {m} | {text} | {d['verdict']} |")
    else:
        md += ["## GReFEL", "", f"no {grefel_p.name}: no GReFEL cell finished"]
    a.results.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.results / "gpu_verdicts.json", json.dumps(rep, indent=2, default=str) + "\n")
    atomic_write_text(a.results / "gpu_verdicts.md", "\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
