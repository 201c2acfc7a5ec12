"""Tables shaped like the DIFC paper's (Sreenivas et al., ECCVW 2022), from adaptation run directories.

Every function takes *run records* (:func:`load_run` / :func:`load_runs`: one dict per run directory
written by ``fairexpr adapt``) and returns a :class:`pandas.DataFrame`; :func:`to_markdown` renders any
of them. Seeds of the same cell are aggregated as ``mean ± std`` (population std over seeds, ``n`` given).

* :func:`accuracy_table` — Tables 1/2: target accuracy and balanced (mean per-class) accuracy per
  (method, cls_loss, target).
* :func:`confusion_order_table` — Table 3: classes by confusion rank (1 = most confusing) per target,
  from the confusion order computed *after the DI phase* (the first DIFC margin update of a run).
* :func:`confusing_classes_table` — Table 4: mean per-class accuracy of the top-k confusing classes vs
  the rest, DI run (before) vs DIFC run (after), per (method, target).
* :func:`plug_and_play_table` — Table 5: rows CE/DI/DIFC, columns DANN/SAFN/MCD.
* :func:`paired_claims_table` — each claim (DI > CE, DIFC > DI, adapted > source-only) as a paired per-seed
  difference with its 95 % interval and verdict (docs/benchmarks.md).
* :func:`convergence_table` — rule 2 of docs/benchmarks.md per cell: the epoch the source-validation split liked
  best, per seed, and whether any seed liked its last epoch best.
"""
from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from fairexpr._io import atomic_write_bytes, atomic_write_text
from fairexpr.evaluation.convergence import rule2_fields, rule2_verdict

METHOD_COLUMNS = {"dann": "DANN", "safn": "SAFN", "mcd": "MCD"}
LOSS_ROWS = {"ce": "CE", "di": "DI", "difc": "DIFC"}


# ------------------------------------------------------------------------------------------- records
def load_run(run_dir: str | Path, role: str = "target_eval") -> dict[str, Any]:
    """Read ``result.json`` + ``config.yaml`` of an adaptation run into a flat record."""
    import yaml

    d = Path(run_dir)
    res_p, cfg_p = d / "result.json", d / "config.yaml"
    for p in (res_p, cfg_p):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing; {d} is not a finished `fairexpr adapt` run directory")
    result = json.loads(res_p.read_text())
    cfg = yaml.safe_load(cfg_p.read_text())
    ev = (result.get("eval") or {}).get(role)
    return make_record(run=str(d), method=cfg["method"]["name"], cls_loss=cfg["method"].get("cls_loss", "ce"),
                       source=cfg["data"]["train"], target=cfg["data"].get("target") or cfg["data"].get("target_eval"), seed=int(cfg.get("seed", 0)), metrics=ev,
                       history=result.get("history") or [])


def make_record(*, run: str, method: str, cls_loss: str, source: str, target: str, seed: int,
                metrics: dict[str, Any] | None, history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One run as the tables expect it (``metrics`` = the evaluation dict of ``fairexpr.evaluation.metrics.evaluate``)."""
    return {"run": run, "method": method, "cls_loss": cls_loss, "source": source, "target": target, "seed": seed,
            "metrics": metrics, "history": list(history or [])}


def load_runs(run_dirs: Iterable[str | Path], role: str = "target_eval") -> list[dict[str, Any]]:
    return [load_run(d, role) for d in run_dirs]


def first_confusion_order(record: dict[str, Any]) -> list[int] | None:
    """The confusion order computed at the first DIFC update (i.e. from the model after the DI phase)."""
    for row in record.get("history", []):
        if row.get("difc_updated") in (1, 1.0, True) and row.get("difc_order") not in (None, "null"):
            order = row["difc_order"]
            return [int(c) for c in (json.loads(order) if isinstance(order, str) else order)]
    return None


def _fmt(values: Sequence[float], digits: int = 2, scale: float = 100.0) -> str:
    v = np.asarray([x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))], dtype=float)
    if v.size == 0:
        return "–"
    if v.size == 1:
        return f"{v[0] * scale:.{digits}f}"
    return f"{v.mean() * scale:.{digits}f} ± {v.std() * scale:.{digits}f}"


def _need_metrics(r: dict[str, Any]) -> dict[str, Any]:
    if not r.get("metrics"):
        raise ValueError(f"run {r['run']!r} has no target evaluation (pass --target-eval when adapting)")
    return r["metrics"]


# -------------------------------------------------------------------------------------------- tables
def accuracy_table(records: Sequence[dict[str, Any]], *, as_text: bool = True) -> pd.DataFrame:
    """Tables 1/2: accuracy and balanced accuracy (%) per (method, cls_loss, source, target), over seeds."""
    rows = []
    keys: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        keys.setdefault((r["method"], r["cls_loss"], r["source"], r["target"]), []).append(r)
    for (method, loss, source, target), rs in keys.items():
        acc = [_need_metrics(r)["accuracy"] for r in rs]
        bal = [_need_metrics(r)["balanced_accuracy"] for r in rs]
        rows.append({"method": METHOD_COLUMNS.get(method, method), "cls_loss": LOSS_ROWS.get(loss, loss),
                     "source": source, "target": target, "seeds": len(rs),
                     "accuracy": _fmt(acc) if as_text else float(np.mean(acc)),
                     "balanced_accuracy": _fmt(bal) if as_text else float(np.mean(bal))})
    return pd.DataFrame(rows, columns=["method", "cls_loss", "source", "target", "seeds", "accuracy", "balanced_accuracy"])


def confusion_order_table(records: Sequence[dict[str, Any]], classes: Sequence[str]) -> pd.DataFrame:
    """Table 3: per target (and method), class names by confusion rank after the DI phase.

    Several runs of one cell (seeds) are combined by mean rank (ties by class index).
    """
    groups: dict[tuple[str, str], list[list[int]]] = {}
    for r in records:
        order = first_confusion_order(r)
        if order is not None:
            groups.setdefault((r["target"], METHOD_COLUMNS.get(r["method"], r["method"])), []).append(order)
    k = len(classes)
    rows = []
    for (target, method), orders in groups.items():
        ranks = np.zeros(k)
        for o in orders:
            if sorted(o) != list(range(k)):
                raise ValueError(f"confusion order {o} is not a permutation of the {k} classes")
            ranks[np.asarray(o)] += np.arange(1, k + 1)
        mean_rank = ranks / len(orders)
        combined = sorted(range(k), key=lambda c: (mean_rank[c], c))
        rows.append({"target": target, "method": method, "runs": len(orders),
                     **{str(j + 1): classes[c] for j, c in enumerate(combined)}})
    return pd.DataFrame(rows, columns=["target", "method", "runs", *[str(j + 1) for j in range(k)]])


def _group_accuracy(metrics: dict[str, Any], classes: Sequence[str], members: Sequence[int]) -> float:
    pc = metrics["per_class_accuracy"]
    vals = [pc.get(classes[c]) if isinstance(pc, dict) else pc[c] for c in members]
    vals = [float(v) for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else float("nan")


def confusing_classes_table(records: Sequence[dict[str, Any]], classes: Sequence[str], top: int = 3,
                            before: str = "di", after: str = "difc") -> pd.DataFrame:
    """Table 4: mean per-class accuracy (%) of the ``top`` most confusing classes vs the rest.

    The confusing classes of a (method, target) cell come from its ``after`` (DIFC) runs' confusion order
    after the DI phase (combined over seeds by mean rank). "Before" = the ``before`` (DI) runs, "after" =
    the ``after`` runs; classes absent from the target evaluation set are left out of the means.
    """
    cells: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for r in records:
        cells.setdefault((r["method"], r["target"]), {}).setdefault(r["cls_loss"], []).append(r)
    rows = []
    for (method, target), by_loss in cells.items():
        if before not in by_loss or after not in by_loss:
            continue
        order_tab = confusion_order_table(by_loss[after], classes)
        if order_tab.empty:
            continue
        ranked = [classes.index(order_tab.iloc[0][str(j + 1)]) for j in range(len(classes))]
        groups = {f"top-{top} confusing": ranked[:top], "rest": ranked[top:]}
        for gname, members in groups.items():
            b = [_group_accuracy(_need_metrics(r), classes, members) for r in by_loss[before]]
            a = [_group_accuracy(_need_metrics(r), classes, members) for r in by_loss[after]]
            rows.append({"method": METHOD_COLUMNS.get(method, method), "target": target, "group": gname,
                         "classes": ", ".join(classes[c] for c in members),
                         LOSS_ROWS.get(before, before): _fmt(b), LOSS_ROWS.get(after, after): _fmt(a),
                         "change": f"{(np.nanmean(a) - np.nanmean(b)) * 100:+.2f}"})
    cols = ["method", "target", "group", "classes", LOSS_ROWS.get(before, before), LOSS_ROWS.get(after, after), "change"]
    return pd.DataFrame(rows, columns=cols)


def plug_and_play_table(records: Sequence[dict[str, Any]], metric: str = "accuracy",
                        target: str | None = None) -> pd.DataFrame:
    """Table 5: rows CE / DI / DIFC, columns DANN / SAFN / MCD; cells ``metric`` (%) mean ± std over seeds
    (and over targets unless ``target`` selects one)."""
    if metric not in ("accuracy", "balanced_accuracy", "macro_f1"):
        raise ValueError(f"metric must be accuracy|balanced_accuracy|macro_f1, got {metric!r}")
    vals: dict[tuple[str, str], list[float]] = {}
    for r in records:
        if target is not None and r["target"] != target:
            continue
        vals.setdefault((r["cls_loss"], r["method"]), []).append(_need_metrics(r)[metric])
    table = pd.DataFrame(index=list(LOSS_ROWS.values()), columns=list(METHOD_COLUMNS.values()), dtype=object)
    table.index.name = "cls_loss"
    for (loss, method), v in vals.items():
        table.loc[LOSS_ROWS.get(loss, loss), METHOD_COLUMNS.get(method, method)] = _fmt(v)
    return table.fillna("–")


def _verdict(d: dict[str, Any]) -> str:
    """docs/benchmarks.md rule 3 in words, from :func:`~fairexpr.evaluation.stats.paired_difference`'s verdict
    (every claim here is "B > A"): *reproduced* only when the interval excludes 0 upward."""
    return {"b > a": "**reproduced**", "b < a": "opposite shown", "no difference shown": "not shown"}.get(d["verdict"],
                                                                                                     d["verdict"])


def paired_claims_table(records: Sequence[dict[str, Any]], classes: Sequence[str],
                        source_only: dict[str, dict[str, Any]] | None = None, top: int = 3) -> pd.DataFrame:
    """The DIFC claims as paired per-seed differences B − A with 95 % t intervals (points), per (method, target):

    * ``DI > CE`` and ``DIFC > DI``: accuracy, balanced accuracy and the mean accuracy of the ``top`` most confusing
      classes (those of :func:`confusing_classes_table`: the DIFC runs' confusion order after the DI phase);
    * ``adapted > source-only`` for each loss, when ``source_only`` maps a target to the source model's metrics on it
      (one deterministic model: each seed's difference is taken against the same value).

    A claim is reproduced only when the interval excludes 0 in the claimed direction (docs/benchmarks.md, rule 3)."""
    from .stats import format_difference, paired_difference

    cells: dict[tuple[str, str], dict[str, dict[int, dict[str, Any]]]] = {}
    for r in records:
        cells.setdefault((r["method"], r["target"]), {}).setdefault(r["cls_loss"], {})[int(r["seed"])] = _need_metrics(r)
    rows = []

    def add(method: str, target: str, claim: str, metric: str, a: dict[int, float], b: dict[int, float]) -> None:
        if not set(a) & set(b):  # e.g. one seed of each arm, different seeds: nothing to pair, said in the row
            rows.append({"method": METHOD_COLUMNS.get(method, method), "target": target, "claim": claim, "metric": metric,
                         "A": f"{np.mean(list(a.values())) * 100:.2f}", "B": f"{np.mean(list(b.values())) * 100:.2f}",
                         "B − A [95 % CI] (points)": "–", "verdict": f"no shared seed (A {sorted(a)}, B {sorted(b)})"})
            return
        d = paired_difference(a, b)
        seeds = d["seeds"]
        rows.append({"method": METHOD_COLUMNS.get(method, method), "target": target, "claim": claim, "metric": metric,
                     "A": f"{np.mean([a[k] for k in seeds]) * 100:.2f}", "B": f"{np.mean([b[k] for k in seeds]) * 100:.2f}",
                     "B − A [95 % CI] (points)": format_difference(d), "verdict": _verdict(d)})

    for (method, target), by_loss in cells.items():
        confusing = None
        if "difc" in by_loss:
            order_tab = confusion_order_table([r for r in records if r["method"] == method and r["target"] == target
                                               and r["cls_loss"] == "difc"], classes)
            if not order_tab.empty:
                confusing = [classes.index(order_tab.iloc[0][str(j + 1)]) for j in range(top)]
        for claim, lo, hi in (("DI > CE", "ce", "di"), ("DIFC > DI", "di", "difc")):
            if lo not in by_loss or hi not in by_loss:
                continue
            for metric in ("accuracy", "balanced_accuracy"):
                add(method, target, claim, metric, {k: m[metric] for k, m in by_loss[lo].items()},
                    {k: m[metric] for k, m in by_loss[hi].items()})
            if confusing is not None:
                add(method, target, claim, f"top-{top} confusing ({', '.join(classes[c] for c in confusing)})",
                    {k: _group_accuracy(m, classes, confusing) for k, m in by_loss[lo].items()},
                    {k: _group_accuracy(m, classes, confusing) for k, m in by_loss[hi].items()})
        so = (source_only or {}).get(target)
        if so is None:
            continue
        for loss in ("ce", "di", "difc"):
            if loss not in by_loss:
                continue
            for metric in ("accuracy", "balanced_accuracy"):
                add(method, target, f"{LOSS_ROWS[loss]} adapted > source-only", metric,
                    {k: float(so[metric]) for k in by_loss[loss]}, {k: m[metric] for k, m in by_loss[loss].items()})
    return pd.DataFrame(rows, columns=["method", "target", "claim", "metric", "A", "B", "B − A [95 % CI] (points)",
                                       "verdict"])


def convergence_table(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rule 2 per cell (method, target, loss): epochs run, the source-validation best epoch per seed (in seed
    order) and how many seeds liked their last epoch best. ``met`` = no seed did, i.e. the cell's curve has turned
    before the schedule ends; ``no validation`` when the runs logged none (``no validation (k of n runs)`` when only
    some did). Cells run with
    ``train.select_metric=last`` are still *scored* at their last epoch: this table says whether a longer schedule
    could have kept improving the source side, not which model was evaluated."""
    cells: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        cells.setdefault((r["method"], str(r["target"]), r["cls_loss"]), []).append(r)
    rows = []
    order = {k: i for i, k in enumerate(LOSS_ROWS)}
    for (method, target, loss), rs in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], order.get(kv[0][2], 9))):
        rs = sorted(rs, key=lambda r: r["seed"])
        # the last epoch a run logged (its number, not the row count: robust to a history that skips rows)
        fields = [rule2_fields(r.get("history")) for r in rs]
        runs = [f["rule2_epochs"] or 0 for f in fields]
        best = [f["rule2_best_epoch"] for f in fields]
        if any(b is None for b in best):
            last = ""
        else:
            last = f"{sum(b == n for b, n in zip(best, runs))} of {len(rs)}"
        leads = [f"s{r['seed']} {f['rule2_last_lead']:+.2f}" for r, f in zip(rs, fields)
                 if f["rule2_best_epoch"] is not None and f["rule2_best_epoch"] == f["rule2_epochs"]
                 and f["rule2_last_lead"] is not None]
        rows.append({"method": METHOD_COLUMNS.get(method, method), "target": Path(target.split(":", 1)[-1]).name or target,
                     "loss": LOSS_ROWS.get(loss, loss), "seeds": ", ".join(str(r["seed"]) for r in rs),
                     "epochs": ", ".join(str(n) for n in sorted(set(runs))),
                     "best source-val epoch per seed": ", ".join("–" if b is None else str(b) for b in best),
                     "last epoch best": last, "last epoch ahead by (points)": ", ".join(leads),
                     "rule 2": rule2_verdict(fields)})
    return pd.DataFrame(rows, columns=["method", "target", "loss", "seeds", "epochs", "best source-val epoch per seed",
                                       "last epoch best", "last epoch ahead by (points)", "rule 2"])


def all_tables(records: Sequence[dict[str, Any]], classes: Sequence[str], top: int = 3,
               source_only: dict[str, dict[str, Any]] | None = None) -> dict[str, pd.DataFrame]:
    """Tables 2, 3, 4, one Table 5 per target (accuracy) and the paired claims for any list of run records
    (with the source-only rows when ``source_only`` gives the source model's metrics per target)."""
    tables = {
        "table2_accuracy": accuracy_table(records),
        "table3_confusion_order": confusion_order_table(records, classes),
        "table4_confusing_vs_rest": confusing_classes_table(records, classes, top=top),
        "paired_claims": paired_claims_table(records, classes, source_only=source_only, top=top),
        "convergence": convergence_table(records),
    }
    if source_only:
        tables["source_only"] = pd.DataFrame(
            [{"target": t, "accuracy": f"{m['accuracy'] * 100:.2f}", "balanced_accuracy": f"{m['balanced_accuracy'] * 100:.2f}",
              "model": m.get("checkpoint", "")} for t, m in source_only.items()],
            columns=["target", "accuracy", "balanced_accuracy", "model"])
    for target in sorted({r["target"] for r in records}):
        name = Path(str(target).split(":", 1)[-1]).name or str(target)
        tables[f"table5_plug_and_play_{name}"] = plug_and_play_table(records, target=target)
    return tables


def per_class_figure(records: Sequence[dict[str, Any]], classes: Sequence[str], path: str | Path) -> Path | None:
    """PNG: per-class target accuracy (mean over seeds) of CE / DI / DIFC, one panel per (method, target),
    classes ordered by the DI-phase confusion rank (most confusing first) where the runs have one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for r in records:
        if r.get("metrics"):
            cells.setdefault((r["method"], r["target"]), {}).setdefault(r["cls_loss"], []).append(r)
    if not cells:
        return None
    fig, axes = plt.subplots(len(cells), 1, figsize=(8, 2.8 * len(cells)), squeeze=False)
    for ax, ((method, target), by_loss) in zip(axes[:, 0], sorted(cells.items())):
        order_tab = confusion_order_table(by_loss.get("difc", []), classes)
        ranked = ([classes.index(order_tab.iloc[0][str(j + 1)]) for j in range(len(classes))]
                  if not order_tab.empty else list(range(len(classes))))
        width = 0.8 / max(1, len(by_loss))
        absent = np.ones(len(ranked), dtype=bool)
        for i, loss in enumerate(k for k in LOSS_ROWS if k in by_loss):
            vals = [_group_accuracy(_need_metrics(r), classes, [c]) for c in ranked for r in by_loss[loss]]
            per = np.asarray(vals, dtype=float).reshape(len(ranked), -1)
            with warnings.catch_warnings():  # a class absent from the target set has no accuracy: no bar
                warnings.simplefilter("ignore", RuntimeWarning)
                means = np.nanmean(per, axis=1)
            absent &= ~np.isfinite(means)
            ax.bar(np.arange(len(ranked)) + (i - (len(by_loss) - 1) / 2) * width, 100 * means, width,
                   label=f"{LOSS_ROWS[loss]} ({per.shape[1]} runs)")
        for j in np.flatnonzero(absent):  # the target set lacks this class: say so instead of an empty slot
            ax.text(j, 2, "absent", ha="center", va="bottom", fontsize=8, color="gray", rotation=90)
        ax.set_xticks(np.arange(len(ranked)), [classes[c] for c in ranked], fontsize=8)
        ax.set_ylabel("target acc. (%)")
        ax.set_title(f"{METHOD_COLUMNS.get(method, method)} → {Path(str(target).split(':', 1)[-1]).name}"
                     + ("  (classes by confusion rank)" if not order_tab.empty else ""), fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())  # a unique temp file per writer: parallel shards write the same table
    return out


def write_tables(records: Sequence[dict[str, Any]], classes: Sequence[str], out_dir: str | Path,
                 prefix: str = "difc", header: str = "", top: int = 3,
                 source_only: dict[str, dict[str, Any]] | None = None) -> dict[str, Path]:
    """``<prefix>_tables.md`` / ``.json`` and ``<prefix>_per_class.png`` in ``out_dir`` (written atomically)."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = all_tables(records, classes, top, source_only=source_only)
    md = [header] if header else []
    for name, df in tables.items():
        md += [f"## {name}\n", to_markdown(df, index=name.startswith("table5")), ""]
    paths = {"markdown": out / f"{prefix}_tables.md", "json": out / f"{prefix}_tables.json"}
    for key, text in (("markdown", "\n".join(md)),
                      ("json", json.dumps({k: json.loads(v.to_json(orient="split")) for k, v in tables.items()}, indent=2))):
        atomic_write_text(paths[key], text)  # unique temp name: parallel shards write the same tables
    fig = per_class_figure(records, classes, out / f"{prefix}_per_class.png")
    if fig is not None:
        paths["figure"] = fig
    return paths


def to_markdown(df: pd.DataFrame, index: bool = False) -> str:
    """GitHub Markdown table (no extra dependency)."""
    frame = df.reset_index() if index else df
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


__all__ = ["all_tables", "per_class_figure", "write_tables", "accuracy_table", "confusing_classes_table", "confusion_order_table", "first_confusion_order",
           "load_run", "load_runs", "make_record", "plug_and_play_table", "to_markdown"]
