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
"""
from __future__ import annotations

import json
import os
import math
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

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


def all_tables(records: Sequence[dict[str, Any]], classes: Sequence[str], top: int = 3) -> dict[str, pd.DataFrame]:
    """Tables 2, 3, 4 and one Table 5 per target (accuracy) for any list of run records."""
    tables = {
        "table2_accuracy": accuracy_table(records),
        "table3_confusion_order": confusion_order_table(records, classes),
        "table4_confusing_vs_rest": confusing_classes_table(records, classes, top=top),
    }
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
        for i, loss in enumerate(k for k in LOSS_ROWS if k in by_loss):
            vals = [_group_accuracy(_need_metrics(r), classes, [c]) for c in ranked for r in by_loss[loss]]
            per = np.asarray(vals, dtype=float).reshape(len(ranked), -1)
            with warnings.catch_warnings():  # a class absent from the target set has no accuracy: no bar
                warnings.simplefilter("ignore", RuntimeWarning)
                means = np.nanmean(per, axis=1)
            ax.bar(np.arange(len(ranked)) + (i - (len(by_loss) - 1) / 2) * width, 100 * means, width,
                   label=f"{LOSS_ROWS[loss]} ({per.shape[1]} runs)")
        ax.set_xticks(np.arange(len(ranked)), [classes[c] for c in ranked], fontsize=8)
        ax.set_ylabel("target acc. (%)")
        ax.set_title(f"{METHOD_COLUMNS.get(method, method)} → {Path(str(target).split(':', 1)[-1]).name}"
                     + ("  (classes by confusion rank)" if not order_tab.empty else ""), fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(path)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.png")  # unique per writer: parallel shards write the same table
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out


def write_tables(records: Sequence[dict[str, Any]], classes: Sequence[str], out_dir: str | Path,
                 prefix: str = "difc", header: str = "", top: int = 3) -> dict[str, Path]:
    """``<prefix>_tables.md`` / ``.json`` and ``<prefix>_per_class.png`` in ``out_dir`` (written atomically)."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = all_tables(records, classes, top)
    md = [header] if header else []
    for name, df in tables.items():
        md += [f"## {name}\n", to_markdown(df, index=name.startswith("table5")), ""]
    paths = {"markdown": out / f"{prefix}_tables.md", "json": out / f"{prefix}_tables.json"}
    for key, text in (("markdown", "\n".join(md)),
                      ("json", json.dumps({k: json.loads(v.to_json(orient="split")) for k, v in tables.items()}, indent=2))):
        tmp = paths[key].with_suffix(paths[key].suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(paths[key])
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
