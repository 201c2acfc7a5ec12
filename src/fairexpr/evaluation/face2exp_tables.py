"""Tables and figures shaped like the Face2Exp paper's (Zeng et al., CVPR 2022), from training run directories.

The paper compares supervised learning (SL) with Meta-Face2Exp at 1/5/10 % of the labels by the **mean** and
the **standard deviation of the per-class accuracies** ("Mean Acc" / "Std Acc"): de-biasing should raise the
first and lower the second. For one run with per-class accuracies ``a_1..a_K`` (classes present in the split)

    Mean Acc = (1/K) Σ_k a_k   (= balanced accuracy),      Std Acc = sqrt((1/K) Σ_k (a_k − Mean Acc)²)

(population std, as :func:`fairexpr.evaluation.metrics.per_class_summary`). Seeds of the same cell
(dataset, label fraction, method) are aggregated as ``mean ± std`` over runs (population std; ``seeds`` = n).

Records come from run directories written by ``fairexpr train``: ``config.yaml`` and
``eval/<role>/metrics.json`` (accuracy, balanced_accuracy, per_class_accuracy, per_class_accuracy_std,
confusion_matrix). Everything returns a :class:`pandas.DataFrame`; :func:`to_markdown` renders it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .convergence import epochs_cell, rule2_fields, rule2_verdict
from .difc_tables import to_markdown

__all__ = ["METHOD_NAMES", "load_run", "load_runs", "make_record", "run_summary", "mean_std_table", "per_class_table",
           "delta_table", "plot_confusion_pair", "to_markdown"]

#: config ``method.name`` -> the paper's name
METHOD_NAMES = {"supervised": "SL", "face2exp": "Meta-Face2Exp"}


# ------------------------------------------------------------------------------------------- records
def make_record(*, run: str, method: str, label_fraction: float, seed: int, train: str,
                metrics: dict[str, Any]) -> dict[str, Any]:
    """One run as the tables expect it (``metrics`` = a ``metrics.json`` dict of the evaluated split)."""
    for key in ("accuracy", "per_class_accuracy"):
        if key not in metrics:
            raise ValueError(f"run {run!r}: metrics have no {key!r} (expected a fairexpr metrics.json)")
    return {"run": run, "method": METHOD_NAMES.get(method, method), "label_fraction": float(label_fraction),
            "seed": int(seed), "train": train, "metrics": metrics}


def load_run(run_dir: str | Path, role: str = "test") -> dict[str, Any]:
    """Read ``config.yaml`` and ``eval/<role>/metrics.json`` of a finished ``fairexpr train`` run."""
    import yaml

    d = Path(run_dir)
    cfg_p, met_p = d / "config.yaml", d / "eval" / role / "metrics.json"
    for p in (cfg_p, met_p):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing; {d} is not a finished `fairexpr train` run evaluated on {role!r}")
    cfg = yaml.safe_load(cfg_p.read_text())
    train = cfg["data"]["train"]
    if cfg["data"].get("train_split"):
        train = f"{train}@{cfg['data']['train_split']}"
    rec = make_record(run=str(d), method=cfg["method"]["name"], label_fraction=float(cfg["data"].get("label_fraction", 1.0)),
                      seed=int(cfg.get("seed", 0)), train=train, metrics=json.loads(met_p.read_text()))
    res_p = d / "result.json"
    if res_p.is_file():  # how long the run trained and which epoch was kept (the protocol states both per cell)
        result = json.loads(res_p.read_text())
        rec["epochs_run"], rec["best_epoch"] = result.get("epochs_run"), result.get("best_epoch")
        rec.update(rule2_fields(result.get("history")))
    return rec


def load_runs(run_dirs: Iterable[str | Path], role: str = "test") -> list[dict[str, Any]]:
    return [load_run(d, role) for d in run_dirs]


def run_summary(metrics: dict[str, Any]) -> dict[str, float]:
    """``accuracy``, ``mean_acc`` and ``std_acc`` of one run (per-class values of absent classes skipped)."""
    a = np.array([np.nan if v is None else float(v) for v in metrics["per_class_accuracy"].values()], dtype=float)
    a = a[np.isfinite(a)]
    if a.size == 0:
        raise ValueError("per_class_accuracy: no class is present in the evaluated split")
    return {"accuracy": float(metrics["accuracy"]), "mean_acc": float(a.mean()), "std_acc": float(a.std(ddof=0))}


def _fmt(values: Sequence[float], digits: int = 2, scale: float = 100.0) -> str:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if v.size == 0:
        return "–"
    if v.size == 1:
        return f"{v[0] * scale:.{digits}f}"
    return f"{v.mean() * scale:.{digits}f} ± {v.std() * scale:.{digits}f}"


def _cells(records: Sequence[dict[str, Any]]) -> dict[tuple[str, float, str], list[dict[str, Any]]]:
    cells: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for r in records:
        cells.setdefault((r["train"], r["label_fraction"], r["method"]), []).append(r)
    order = {"SL": 0, "Meta-Face2Exp": 1}
    return dict(sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], order.get(kv[0][2], 2), kv[0][2])))


# -------------------------------------------------------------------------------------------- tables
def mean_std_table(records: Sequence[dict[str, Any]], *, as_text: bool = True) -> pd.DataFrame:
    """The paper's table: per (train set, label fraction, method) the accuracy, Mean Acc and Std Acc (%) over seeds."""
    rows = []
    for (train, frac, method), rs in _cells(records).items():
        s = [run_summary(r["metrics"]) for r in rs]
        row: dict[str, Any] = {"train": train, "labels": f"{frac * 100:g}%", "method": method, "seeds": len(rs),
                               "epochs (best)": _epochs(rs),
                               "rule 2": rule2_verdict(rs)}
        for key, col in (("accuracy", "accuracy"), ("mean_acc", "Mean Acc"), ("std_acc", "Std Acc")):
            vals = [x[key] for x in s]
            row[col] = _fmt(vals) if as_text else float(np.mean(vals))
        rows.append(row)
    return pd.DataFrame(rows, columns=["train", "labels", "method", "seeds", "epochs (best)", "rule 2", "accuracy",
                                       "Mean Acc", "Std Acc"])


def _epochs(rs: Sequence[dict[str, Any]]) -> str:
    """``"20 (14), 20 (20, last +0.30)"``: epochs run and the epoch kept per seed, with the last epoch's lead over
    the best earlier one where the last was kept (``–`` where ``result.json`` is absent)."""
    return ", ".join(epochs_cell(r.get("epochs_run"), r.get("best_epoch"), r.get("rule2_last_lead"))
                     for r in sorted(rs, key=lambda r: r["seed"]))


def per_class_table(records: Sequence[dict[str, Any]], classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-class accuracy (%) of every cell, mean ± std over seeds (the paper's de-biasing on rare classes)."""
    cells = _cells(records)
    if classes is None:
        classes = list(next(iter(cells.values()))[0]["metrics"]["per_class_accuracy"]) if cells else []
    rows = []
    for (train, frac, method), rs in cells.items():
        row: dict[str, Any] = {"train": train, "labels": f"{frac * 100:g}%", "method": method, "seeds": len(rs)}
        for c in classes:
            vals = [r["metrics"]["per_class_accuracy"].get(c) for r in rs]
            row[c] = _fmt([np.nan if v is None else float(v) for v in vals], digits=1)
        rows.append(row)
    return pd.DataFrame(rows, columns=["train", "labels", "method", "seeds", *classes])


def delta_table(records: Sequence[dict[str, Any]], method: str = "Meta-Face2Exp", baseline: str = "SL") -> pd.DataFrame:
    """Meta-Face2Exp − SL per (train set, label fraction), paired by seed, in points: the mean difference with its
    95 % Student-t interval (:func:`fairexpr.evaluation.stats.paired_difference`). The paper's claim is
    ``Δ Mean Acc > 0`` and ``Δ Std Acc < 0``; each is **reproduced** only when its interval excludes 0 in that
    direction, "opposite shown" when it excludes 0 the other way. ``seeds`` = the seeds the two cells share."""
    from .stats import claim_verdict, format_difference, paired_difference

    cells = _cells(records)
    rows = []
    for (train, frac, m), rs in cells.items():
        if m != method or (train, frac, baseline) not in cells:
            continue
        base = {r["seed"]: run_summary(r["metrics"]) for r in cells[(train, frac, baseline)]}
        ours = {r["seed"]: run_summary(r["metrics"]) for r in rs}
        shared = sorted(set(base) & set(ours))
        if not shared:
            continue
        row: dict[str, Any] = {"train": train, "labels": f"{frac * 100:g}%", "seeds": len(shared)}
        for key, col, want in (("accuracy", "Δ accuracy", None), ("mean_acc", "Δ Mean Acc", "b > a"),
                               ("std_acc", "Δ Std Acc", "b < a")):
            d = paired_difference({s: base[s][key] for s in shared}, {s: ours[s][key] for s in shared})
            row[col] = format_difference(d)
            if want is not None:
                row[col.replace("Δ ", "") + " claim"] = claim_verdict(d, want)
        row["Mean Acc up, seeds"] = f"{sum(ours[s]['mean_acc'] > base[s]['mean_acc'] for s in shared)}/{len(shared)}"
        row["Std Acc down, seeds"] = f"{sum(ours[s]['std_acc'] < base[s]['std_acc'] for s in shared)}/{len(shared)}"
        rows.append(row)
    return pd.DataFrame(rows, columns=["train", "labels", "seeds", "Δ accuracy", "Δ Mean Acc", "Mean Acc claim",
                                       "Δ Std Acc", "Std Acc claim", "Mean Acc up, seeds", "Std Acc down, seeds"])


# -------------------------------------------------------------------------------------------- figure
def plot_confusion_pair(left: dict[str, Any], right: dict[str, Any], path: str | Path,
                        titles: Sequence[str] | None = None) -> Path:
    """Two row-normalised confusion matrices side by side (e.g. SL vs Meta-Face2Exp at the same labels and seed);
    ``left``/``right`` are records (:func:`load_run`) or ``metrics.json`` dicts. Cells show the fraction of the
    true class with the count in brackets; the shared colour scale makes rare-class rows comparable."""
    from matplotlib.figure import Figure

    from .plots import save_figure

    mets = [m.get("metrics", m) for m in (left, right)]
    classes = list(mets[0]["per_class_accuracy"])
    if list(mets[1]["per_class_accuracy"]) != classes:
        raise ValueError("plot_confusion_pair: the two runs have different class lists")
    k = len(classes)
    names = list(titles) if titles else [left.get("method", "left") + f" (seed {left.get('seed', '?')})",
                                         right.get("method", "right") + f" (seed {right.get('seed', '?')})"]
    size = max(4.0, 0.75 * k + 1.5)
    fig = Figure(figsize=(2 * size + 1.5, size))
    axes = fig.subplots(1, 2, gridspec_kw={"wspace": 0.55})  # room for the right panel's class labels
    im = None
    for ax, m, name in zip(axes, mets, names):
        cm = np.asarray(m["confusion_matrix"], dtype=np.int64)
        if cm.shape != (k, k):
            raise ValueError(f"confusion matrix: expected shape ({k}, {k}), got {cm.shape}")
        rows = cm.sum(1, keepdims=True)
        norm = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
        im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{norm[i, j]:.2f}\n({cm[i, j]})", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), labels=classes, rotation=45, ha="right")
        ax.set_yticks(range(k), labels=[f"{c} (n={int(r)})" for c, r in zip(classes, rows[:, 0])])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        s = run_summary(m)
        ax.set_title(f"{name}\nacc {s['accuracy'] * 100:.1f}  Mean Acc {s['mean_acc'] * 100:.1f}  "
                     f"Std Acc {s['std_acc'] * 100:.1f}", fontsize=9)
    fig.colorbar(im, ax=list(axes), fraction=0.025, pad=0.02, label="fraction of true class")
    return save_figure(fig, path)
