"""ECE before / after the end-of-training temperature, per recipe, from finished runs (issue 14: "ECE figures before/after
for every recipe").

Every `fairexpr train` / `adapt` run fits a temperature on its validation split at the end (``train.calibrate``) and
evaluates every labelled role with it; ``eval/<role>/predictions.npz`` keeps the raw logits. This script reads those
and reports, per group of runs (one recipe, several seeds/cells) and role (``val`` = where T was fitted, ``test``,
``target_eval``), the 15-bin ECE at T = 1 (the network as trained) and at the fitted T, mean and worst over the runs,
and how many runs meet the goal of ECE ≤ 5 %. Images without a label in the model's classes are left out and counted.

    python benchmarks/calibration.py --group "LABEL=RUN_GLOB" [--group ...] --tag calibration

A label that names a recipe file (``configs/x.yaml ...``) marks that recipe measured; every other file under
``--recipes`` (configs/) is listed as not measured.

``--class-bias`` adds an analysis column, not something any model ships: a temperature *and a per-class bias* fitted
together on the same validation split by NLL (vector scaling's bias term), its ECE per role and what it does to the
predictions (accuracy and balanced accuracy change, points). It answers whether a temperature alone is the limit
on a balanced model's ECE, and what removing the rest would cost in balance.

RUN_GLOB is relative to the repository root (``benchmarks/runs/difc_init_default/mcd_*``); a directory counts as a
run when it has ``model.json`` and ``eval/``. A group that matches no finished run is an error.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fairexpr._io import atomic_write_text  # noqa: E402

GOAL = 0.05
ROLES = ("val", "test", "target_eval")


def role_order(role: str) -> tuple[int, str]:
    """``val`` (where T was fitted), ``test``, ``target_eval``, then any other evaluation (``fairexpr eval --out
    RUN/eval/<name>``) by name."""
    return (ROLES.index(role) if role in ROLES else len(ROLES), role)


def fit_temperature_bias(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """``T`` and a per-class bias ``b`` (``b_0 = 0``) minimising the mean NLL of ``softmax(z / T + b)`` (L-BFGS from the
    temperature-only optimum and b = 0)."""
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    from fairexpr.evaluation.calibration import fit_temperature

    k, rows = z.shape[1], np.arange(len(y))

    def nll(w: np.ndarray) -> float:
        s = z * np.exp(-w[0]) + np.r_[0.0, w[1:]]
        return float(np.mean(logsumexp(s, axis=1) - s[rows, y]))

    w = minimize(nll, np.r_[np.log(fit_temperature(z, y)), np.zeros(k - 1)], method="L-BFGS-B").x
    return float(np.exp(w[0])), np.r_[0.0, w[1:]]


def _balanced(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))


def _load(f: Path) -> tuple[np.ndarray, np.ndarray, int]:
    d = np.load(f)
    if "logits" not in d.files or "y_true" not in d.files:
        raise SystemExit(f"{f}: expected arrays 'logits' and 'y_true', found {sorted(d.files)}")
    y = d["y_true"].astype(int)
    keep = y >= 0
    return d["logits"][keep].astype(np.float64), y[keep], int((~keep).sum())


def run_calibration(run: Path, class_bias: bool = False) -> dict[str, dict[str, Any]]:
    """Per evaluated role of one run: ``n``, ``excluded`` (no label in the model's classes), ``temperature``,
    ``ece_before`` (T = 1) and ``ece_after`` (the run's fitted T), from ``eval/<role>/predictions.npz``; with
    ``class_bias`` also ``ece_bias`` and ``d_accuracy`` / ``d_balanced`` of ``z / T' + b`` fitted on ``val`` against
    the run's T (roles of a run without ``eval/val`` get none)."""
    from fairexpr.evaluation.calibration import reliability_diagram, softmax

    side = json.loads((run / "model.json").read_text())
    t = float(side.get("temperature", 1.0))
    fitted = None
    if class_bias and (run / "eval" / "val" / "predictions.npz").is_file():
        zv, yv, _ = _load(run / "eval" / "val" / "predictions.npz")
        fitted = fit_temperature_bias(zv, yv)
    out: dict[str, dict[str, Any]] = {}
    for f in sorted((run / "eval").glob("*/predictions.npz"), key=lambda p: role_order(p.parent.name)):
        z, y, excluded = _load(f)
        row = {"n": len(y), "excluded": excluded, "temperature": t,
               "ece_before": float(reliability_diagram(softmax(z, 1.0), y)["ece"]),
               "ece_after": float(reliability_diagram(softmax(z, t), y)["ece"])}
        if fitted is not None:
            tb, b = fitted
            s = z / tb + b
            row |= {"ece_bias": float(reliability_diagram(softmax(s, 1.0), y)["ece"]),
                    "d_accuracy": float((s.argmax(1) == y).mean() - (z.argmax(1) == y).mean()),
                    "d_balanced": _balanced(s.argmax(1), y) - _balanced(z.argmax(1), y)}
        out[f.parent.name] = row
    return out


def span(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def group_table(groups: dict[str, list[Path]], class_bias: bool = False) -> list[dict[str, Any]]:
    rows = []
    for label, runs in groups.items():
        per_run = {r: run_calibration(r, class_bias) for r in runs}
        roles = sorted({r for c in per_run.values() for r in c}, key=role_order)
        for role in roles:
            vals = [c[role] for c in per_run.values() if role in c]
            if not vals:
                continue
            before = np.array([v["ece_before"] for v in vals]) * 100
            after = np.array([v["ece_after"] for v in vals]) * 100
            temps = np.array([v["temperature"] for v in vals])
            rows.append({"recipe / runs": label, "role": role, "runs": len(vals),
                         "images": span([v["n"] for v in vals]) + (f" (+{span([v['excluded'] for v in vals])} excluded)"
                                                                   if any(v["excluded"] for v in vals) else ""),
                         "T (range)": f"{temps.min():.3g}–{temps.max():.3g}" if len(vals) > 1 else f"{temps[0]:.3g}",
                         "ECE T=1 % (worst)": f"{before.mean():.1f} ({before.max():.1f})",
                         "ECE fitted T % (worst)": f"{after.mean():.1f} ({after.max():.1f})",
                         "≤ 5 %": f"{int((after <= GOAL * 100).sum())}/{len(vals)}"})
            if class_bias:
                vb = [v for v in vals if "ece_bias" in v]
                if vb:
                    eb = np.array([v["ece_bias"] for v in vb]) * 100
                    da = np.array([v["d_accuracy"] for v in vb]) * 100
                    dbal = np.array([v["d_balanced"] for v in vb]) * 100
                    rows[-1] |= {"ECE T+bias % (worst)": f"{eb.mean():.1f} ({eb.max():.1f})",
                                 "Δ acc / Δ bal (points)": f"{da.mean():+.1f} / {dbal.mean():+.1f}"}
                else:
                    rows[-1] |= {"ECE T+bias % (worst)": "– (no val)", "Δ acc / Δ bal (points)": "–"}
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    cols = list(rows[0])
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                     + ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]) + "\n"


def parse_groups(specs: list[str]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for spec in specs:
        label, sep, pattern = spec.partition("=")
        if not sep or not label.strip() or not pattern.strip():
            raise SystemExit(f"--group: expected LABEL=RUN_GLOB, got {spec!r}")
        runs = sorted(p for p in ROOT.glob(pattern) if (p / "model.json").exists() and (p / "eval").is_dir())
        if not runs:
            raise SystemExit(f"--group {label}: no finished run (model.json + eval/) matches {pattern!r}")
        groups[label.strip()] = runs
    return groups


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", action="append", required=True, metavar="LABEL=RUN_GLOB")
    ap.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--tag", default="calibration")
    ap.add_argument("--class-bias", action="store_true", help="also fit T and a per-class bias on val (analysis: "
                    "ECE and the accuracy / balanced accuracy change it would cost)")
    ap.add_argument("--recipes", default="configs", help="recipe folder: every recipe file no group label names is "
                    "listed as not measured")
    a = ap.parse_args(argv)
    groups = parse_groups(a.group)
    rows = group_table(groups, a.class_bias)
    recipes = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / a.recipes).glob("*.yaml"))
    unmeasured = [r for r in recipes if not any(r in label for label in groups)]
    res = Path(a.results_dir)
    res.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python benchmarks/calibration.py " + " ".join(f"--group '{g}'" for g in a.group)
                       + (f" --tag {a.tag}" if a.tag != "calibration" else "") + (" --class-bias" if a.class_bias else ""),
            "ece": "15 equal-width confidence bins; T fitted on each run's validation split by NLL at the end of training "
                   "(single view); T = 1 is the network's raw output (a cosine head's logits without LDAM's s, hence "
                   "T near 1/s); roles are evaluated as the run did (with flip TTA where the recipe sets it)",
            "goal": f"ECE <= {GOAL:.0%} on the test split (issue 14)", "date": time.strftime("%Y-%m-%d"),
            "runs": {k: [str(p.relative_to(ROOT)) for p in v] for k, v in groups.items()},
            "recipes_not_measured": unmeasured}
    atomic_write_text(res / f"{a.tag}.json", json.dumps({"meta": meta, "rows": rows}, indent=2, ensure_ascii=False))
    text = (f"## ECE before / after the end-of-training temperature ({a.tag})\n\n" + markdown(rows) + "\n"
            + "\n".join(f"- {k}: {v}" for k, v in meta.items() if k not in ("runs", "recipes_not_measured")) + "\n"
            + (f"\n**Recipes without a measured run here** ({len(unmeasured)} of {len(recipes)} in {a.recipes}/): "
               + ", ".join(f"`{r}`" for r in unmeasured) + "\n" if unmeasured else ""))
    atomic_write_text(res / f"{a.tag}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
