"""Tables shaped like the GReFEL paper's ablations (Wasi et al. 2024), from ``fairexpr train`` run directories.

* **Table 2** (reliability-balancing components): per dataset, the head variant — *without RB* (no anchors,
  no MHSA: ``L_final = l``), *anchors only*, *MHSA only*, *anchors + MHSA* — with accuracy, macro-F1,
  parameters and FLOPs. Runs trained with clean labels and the full loss of their variant.
* **Table 3** (loss terms): the full head trained with ``L_cls`` / ``L_cls + L_a`` / ``L_cls + L_a + L_c``
  (``method.lambda_anchor`` / ``method.lambda_center`` set to 0 to drop a term).
* **Table 7** (label noise): accuracy at 0/10/20/30 % injected noise, with and without RB.
* **Claims** (:func:`claims_table`): the paper's three claims as paired per-seed differences with 95 % Student-t
  intervals (RB > without RB; the full loss above L_cls and above L_cls + L_a; RB above without RB at each injected
  noise rate), *reproduced* only when the interval excludes 0 in the claimed direction.
* **A setting change** (:func:`change_table`): each cell (dataset, head, loss, noise) run with and without one
  change of settings (e.g. ``model.kwargs.anchor_init=data``), paired by seed; the baseline's records come from an
  earlier ``*_runs.json``.
* **Epochs** (:func:`epochs_table`): epochs run and the epoch kept per cell and seed (a baseline whose best epoch is
  its last has not converged).
* **Cluster quality**: Davies–Bouldin (lower is better) and Calinski–Harabasz (higher is better) of the test
  embeddings grouped by true class, as ``fairexpr.evaluation.metrics.cluster_quality`` writes them.

Seeds of one cell are aggregated as ``mean ± std`` (population std over seeds; ``seeds`` = n). Accuracy-type
numbers are shown in %.

A run directory needs ``model.json`` (the checkpoint sidecar: model spec, preprocessing and the full
training ``config``), ``eval/<role>/metrics.json`` and optionally ``result.json`` (training time, steps).
Parameters and FLOPs come from rebuilding the model described by ``model.json`` (weights are not loaded)
and counting one forward pass at its input size with :func:`fairexpr.models.grefel.model_complexity`
("GFLOPs" as the paper and ``thop`` report them = multiply-accumulates).
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from .convergence import epochs_cell, rule2_fields, rule2_verdict, val_curve
from .difc_tables import to_markdown

__all__ = ["RB_VARIANTS", "LOSS_VARIANTS", "change_table", "claims_table", "cluster_table", "collapse_table", "collapsed_runs_table", "early_warning_table", "epochs_table", "complexity_of", "load_run", "load_runs", "loss_variant",
           "noise_table", "loss_table", "rb_table", "rb_variant", "to_markdown"]

#: head variants of Table 2 in the paper's order
RB_VARIANTS = ("without RB", "anchors only", "MHSA only", "anchors + MHSA")
#: loss variants of Table 3 in the paper's order
LOSS_VARIANTS = ("L_cls", "L_cls + L_a", "L_cls + L_c", "L_cls + L_a + L_c")


# ------------------------------------------------------------------------------------------- records
def rb_variant(use_anchors: bool, use_mhsa: bool) -> str:
    """Table-2 name of a head configuration."""
    if use_anchors and use_mhsa:
        return "anchors + MHSA"
    return "anchors only" if use_anchors else "MHSA only" if use_mhsa else "without RB"


def loss_variant(use_anchors: bool, lambda_anchor: float, lambda_center: float) -> str:
    """Table-3 name of the loss actually optimised (the anchor terms do not exist without anchors)."""
    if not use_anchors:
        return "L_cls"
    return LOSS_VARIANTS[(lambda_anchor > 0) + 2 * (lambda_center > 0)]


def _dataset_name(cfg: dict[str, Any]) -> str:
    spec = str(cfg.get("data", {}).get("train", "?"))
    return spec.split(":", 1)[0] if ":" in spec else spec


@lru_cache(maxsize=32)
def _complexity_cached(spec_json: str) -> tuple[float, float]:
    from ..models import create_model
    from ..models.grefel import model_complexity

    spec = json.loads(spec_json)
    model = create_model(spec["name"], num_classes=spec["num_classes"], pretrained=None, **spec["kwargs"])
    c = model_complexity(model, input_size=tuple(spec["input_size"]), in_chans=spec["in_chans"])
    return float(c["params"]), float(c["macs"])


def complexity_of(sidecar: dict[str, Any]) -> dict[str, float]:
    """``{"params", "macs"}`` of the network a ``model.json`` sidecar describes, at its preprocessing input size
    (cached per distinct spec, so seeds of one variant are counted once)."""
    try:
        m, pre = sidecar["model"], sidecar["preprocess"]
        spec = {"name": m["name"], "num_classes": int(m["num_classes"]), "kwargs": m.get("kwargs") or {},
                "input_size": list(pre["input_size"]), "in_chans": int(pre["in_chans"])}
    except (KeyError, TypeError) as e:
        raise ValueError(f"model.json: expected 'model' {{name, num_classes, kwargs}} and 'preprocess' "
                         f"{{input_size, in_chans}}; missing {e}") from e
    params, macs = _complexity_cached(json.dumps(spec, sort_keys=True))
    return {"params": params, "macs": macs}


def load_run(run_dir: str | Path, role: str = "test", *, complexity: bool = True) -> dict[str, Any]:
    """One finished run as a flat record: dataset, seed, head/loss variant, label noise, test metrics
    (accuracy, balanced accuracy, macro-F1, Davies–Bouldin, Calinski–Harabasz), params/MACs, train time."""
    d = Path(run_dir)
    side_p, met_p, res_p = d / "model.json", d / "eval" / role / "metrics.json", d / "result.json"
    for p in (side_p, met_p):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing; {d} is not a finished `fairexpr train` run evaluated on {role!r}")
    sidecar = json.loads(side_p.read_text())
    cfg = sidecar.get("config")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("method"), dict):
        raise ValueError(f"{side_p}: has no training 'config' with a 'method' section")
    meth, data = cfg["method"], cfg.get("data", {})
    if meth.get("name") != "grefel":
        raise ValueError(f"{side_p}: method is {meth.get('name')!r}, expected 'grefel'")
    m = json.loads(met_p.read_text())
    for key in ("accuracy", "macro_f1"):
        if key not in m:
            raise ValueError(f"{met_p}: has no {key!r} (expected a fairexpr metrics.json)")
    use_a, use_m = bool(meth.get("use_anchors", True)), bool(meth.get("use_mhsa", True))
    la, lc = float(meth.get("lambda_anchor", 1.0)), float(meth.get("lambda_center", 1.0))
    cluster = m.get("cluster") or {}
    rec: dict[str, Any] = {
        "run": str(d), "dataset": _dataset_name(cfg), "seed": int(cfg.get("seed", 0)),
        "model": sidecar.get("model", {}).get("name"), "use_anchors": use_a, "use_mhsa": use_m,
        "anchor_init": (sidecar.get("model", {}).get("kwargs") or {}).get("anchor_init", "normal") if use_a else None,
        "rb": rb_variant(use_a, use_m), "lambda_anchor": la, "lambda_center": lc, "loss": loss_variant(use_a, la, lc),
        "label_noise": float(data.get("label_noise", 0.0)), "label_noise_kind": data.get("label_noise_kind", "symmetric"),
        "accuracy": float(m["accuracy"]), "balanced_accuracy": m.get("balanced_accuracy"), "macro_f1": float(m["macro_f1"]),
        "davies_bouldin": cluster.get("davies_bouldin"), "calinski_harabasz": cluster.get("calinski_harabasz"),
        "n_test": m.get("n"),
        # recall per class, in the metrics file's class order (what a collapsed run still predicts)
        "per_class_accuracy": ({c: m["per_class_accuracy"].get(c) for c in m.get("classes") or m["per_class_accuracy"]}
                               if isinstance(m.get("per_class_accuracy"), dict) else None),
    }
    if res_p.is_file():
        res = json.loads(res_p.read_text())
        rec.update({k: res.get(k) for k in ("train_seconds", "steps", "epochs_run", "best_epoch", "stopped_by")})
        rec.update(rule2_fields(res.get("history")))
        rec["val_curve"] = [[e, v] for e, v in val_curve(res.get("history"))]  # holdout balanced accuracy per epoch
    if complexity:
        rec.update(complexity_of(sidecar))
    return rec


def load_runs(run_dirs: Iterable[str | Path], role: str = "test", *, complexity: bool = True) -> list[dict[str, Any]]:
    return [load_run(d, role, complexity=complexity) for d in run_dirs]


# -------------------------------------------------------------------------------------------- tables
def _fmt(values: Sequence[Any], digits: int = 2, scale: float = 100.0) -> str:
    v = np.asarray([float(x) for x in values if x is not None and not math.isnan(float(x))], dtype=float)
    if v.size == 0:
        return "–"
    if v.size == 1:
        return f"{v[0] * scale:.{digits}f}"
    return f"{v.mean() * scale:.{digits}f} ± {v.std() * scale:.{digits}f}"


def _mean(values: Sequence[Any]) -> float:
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    return float(np.mean(v)) if v else float("nan")


def _group(records: Sequence[dict[str, Any]], keys: Sequence[str], keep: Callable[[dict[str, Any]], bool],
           order: dict[str, Sequence[Any]]) -> list[tuple[tuple[Any, ...], list[dict[str, Any]]]]:
    cells: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in records:
        if keep(r):
            cells.setdefault(tuple(r[k] for k in keys), []).append(r)

    def rank(key: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple((list(order[k]).index(v) if k in order and v in order[k] else len(order.get(k, ())), str(v))
                     for k, v in zip(keys, key))

    return sorted(cells.items(), key=lambda kv: rank(kv[0]))


def _full_loss(r: dict[str, Any]) -> bool:
    return not r["use_anchors"] or (r["lambda_anchor"] > 0 and r["lambda_center"] > 0)


#: Table 7's two heads: the MLP head and the full RB head
TABLE7_HEADS = ("without RB", "anchors + MHSA")


def _table7_head(r: dict[str, Any]) -> bool:
    return r["rb"] in TABLE7_HEADS and _full_loss(r)


def _metric_cols(rs: list[dict[str, Any]], as_text: bool) -> dict[str, Any]:
    acc, f1 = [r["accuracy"] for r in rs], [r["macro_f1"] for r in rs]
    bal = [r.get("balanced_accuracy") for r in rs]  # absent in runs evaluated before it was recorded: "–"
    return {"accuracy": _fmt(acc) if as_text else _mean(acc), "balanced": _fmt(bal) if as_text else _mean(bal),
            "macro-F1": _fmt(f1) if as_text else _mean(f1)}


def rb_table(records: Sequence[dict[str, Any]], *, as_text: bool = True) -> pd.DataFrame:
    """Table 2: per dataset and head variant (clean labels, full loss) accuracy, balanced accuracy and macro-F1 (%),
    parameters (M) and GFLOPs (multiply-accumulates, 10⁹, at the model's input size)."""
    rows = []
    for (ds, variant), rs in _group(records, ("dataset", "rb"), lambda r: r["label_noise"] == 0 and _full_loss(r),
                                    {"rb": RB_VARIANTS}):
        row: dict[str, Any] = {"dataset": ds, "variant": variant, "seeds": len(rs), **_metric_cols(rs, as_text)}
        params, macs = _mean([r.get("params") for r in rs]), _mean([r.get("macs") for r in rs])
        row["params (M)"] = (f"{params / 1e6:.2f}" if not math.isnan(params) else "–") if as_text else params
        row["GFLOPs"] = (f"{macs / 1e9:.3f}" if not math.isnan(macs) else "–") if as_text else macs
        rows.append(row)
    return pd.DataFrame(rows, columns=["dataset", "variant", "seeds", "accuracy", "balanced", "macro-F1", "params (M)",
                                       "GFLOPs"])


def loss_table(records: Sequence[dict[str, Any]], *, as_text: bool = True) -> pd.DataFrame:
    """Table 3: the full head (anchors + MHSA, clean labels) trained with each loss variant."""
    rows = []
    for (ds, loss), rs in _group(records, ("dataset", "loss"),
                                 lambda r: r["label_noise"] == 0 and r["use_anchors"] and r["use_mhsa"],
                                 {"loss": LOSS_VARIANTS}):
        rows.append({"dataset": ds, "loss": loss, "seeds": len(rs), **_metric_cols(rs, as_text)})
    return pd.DataFrame(rows, columns=["dataset", "loss", "seeds", "accuracy", "balanced", "macro-F1"])


def noise_table(records: Sequence[dict[str, Any]], *, metric: str = "accuracy", as_text: bool = True) -> pd.DataFrame:
    """Table 7: ``metric`` (%) per dataset and head (without RB / with RB = anchors + MHSA, full loss) against the
    injected label-noise rate (one column per rate, e.g. ``0%``, ``10%`` ...)."""
    cells = _group(records, ("dataset", "rb", "label_noise"), _table7_head, {"rb": TABLE7_HEADS})
    rates = sorted({k[2] for k, _ in cells})
    cols = [f"{rate * 100:g}%" for rate in rates]
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for (ds, variant, rate), rs in cells:
        row = table.setdefault((ds, variant), {"dataset": ds, "model": "with RB" if variant != "without RB" else "without RB",
                                               "seeds": 0, **{c: "–" if as_text else float("nan") for c in cols}})
        vals = [r[metric] for r in rs]
        row[f"{rate * 100:g}%"] = _fmt(vals) if as_text else _mean(vals)
        row["seeds"] = max(row["seeds"], len(rs))
    return pd.DataFrame(list(table.values()), columns=["dataset", "model", "seeds", *cols])


def collapse_table(records: Sequence[dict[str, Any]], below: float, *, metric: str = "accuracy") -> pd.DataFrame:
    """Collapsed runs of Table 7's two heads (without RB / with RB = anchors + MHSA, full loss) per dataset and
    label-noise rate: a run *collapses* when its test ``metric`` is below ``below`` (a fraction, fixed before the
    runs). Lists each run's value by seed and the one-sided Fisher exact p that the head without RB collapses more
    often (:func:`fairexpr.evaluation.stats.fisher_one_sided`); a rate with only one head present has no p.
    Described, not a test: with RB − without RB in accuracy and balanced accuracy, paired by seed, over the seeds
    where **neither** head collapsed (the split is made by the outcome, so its interval is not a test of RB)."""
    from .stats import fisher_one_sided, format_difference, paired_difference

    if not 0.0 < below < 1.0:
        raise ValueError(f"collapse threshold must be a fraction in (0, 1), got {below!r}")
    by_cell: dict[tuple[str, float], dict[str, list[dict[str, Any]]]] = {}
    for (ds, variant, rate), rs in _group(records, ("dataset", "rb", "label_noise"), _table7_head, {"rb": TABLE7_HEADS}):
        by_cell.setdefault((ds, rate), {})[variant] = sorted(rs, key=lambda r: r["seed"])
    neither = {"accuracy": "RB − without RB, accuracy, neither collapsed (described)",
               "balanced_accuracy": "RB − without RB, balanced, neither collapsed (described)"}
    cols = ["dataset", "label noise", "collapse: below", "without RB collapsed", "with RB collapsed",
            "without RB by seed", "with RB by seed", "Fisher p (without RB collapses more)", *neither.values()]
    rows = []
    for (ds, rate), arms in sorted(by_cell.items()):
        row: dict[str, Any] = {"dataset": ds, "label noise": f"{rate * 100:g}%", "collapse: below": f"{below * 100:g}%"}
        counts = {}
        for variant, label in (("without RB", "without RB"), ("anchors + MHSA", "with RB")):
            rs = arms.get(variant, [])
            hits = sum(1 for r in rs if r[metric] < below)
            counts[variant] = (hits, len(rs))
            row[f"{label} collapsed"] = f"{hits} of {len(rs)}" if rs else "–"
            row[f"{label} by seed"] = ", ".join(f"s{r['seed']}: {r[metric] * 100:.1f}" + ("*" if r[metric] < below else "")
                                                for r in rs) or "–"
        (ha, na), (hb, nb) = counts["without RB"], counts["anchors + MHSA"]
        row["Fisher p (without RB collapses more)"] = f"{fisher_one_sided(ha, na, hb, nb):.3f}" if na and nb else "–"
        trained = {v: {r["seed"]: r for r in arms.get(v, []) if r[metric] >= below} for v in ("without RB", "anchors + MHSA")}
        seeds = sorted(set(trained["without RB"]) & set(trained["anchors + MHSA"]))
        for key, col in neither.items():
            vals = [{s: trained[v][s].get(key) for s in seeds} for v in ("without RB", "anchors + MHSA")]
            ok = seeds and all(x is not None for v in vals for x in v.values())
            row[col] = format_difference(paired_difference(vals[0], vals[1])) if ok else "–"
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def collapsed_runs_table(records: Sequence[dict[str, Any]], below: float, *, metric: str = "accuracy") -> pd.DataFrame:
    """Every collapsed run of Table 7's two heads (test ``metric`` below ``below``, as in :func:`collapse_table`):
    dataset, label noise, head, seed, accuracy, balanced accuracy and the recall of each class (%), in the run's
    class order; what a collapsed head still predicts. Empty (no rows) when nothing collapsed."""
    if not 0.0 < below < 1.0:
        raise ValueError(f"collapse threshold must be a fraction in (0, 1), got {below!r}")
    hits = sorted((r for r in records if _table7_head(r) and r[metric] < below),
                  key=lambda r: (r["dataset"], r["label_noise"], r["rb"], r["seed"]))
    classes: list[str] = []
    for r in hits:
        classes += [c for c in (r.get("per_class_accuracy") or {}) if c not in classes]
    rows = []
    for r in hits:
        pc = r.get("per_class_accuracy") or {}
        rows.append({"dataset": r["dataset"], "label noise": f"{r['label_noise'] * 100:g}%",
                     "head": "with RB" if r["rb"] == "anchors + MHSA" else r["rb"], "seed": r["seed"],
                     "accuracy": f"{r['accuracy'] * 100:.1f}",
                     "balanced": f"{r['balanced_accuracy'] * 100:.1f}" if r.get("balanced_accuracy") is not None else "–",
                     **{f"{c} recall": f"{pc[c] * 100:.1f}" if pc.get(c) is not None else "–" for c in classes}})
    return pd.DataFrame(rows, columns=["dataset", "label noise", "head", "seed", "accuracy", "balanced",
                                       *(f"{c} recall" for c in classes)])


def early_warning_table(records: Sequence[dict[str, Any]], below: float, epoch: int, warn_below: float, *,
                        metric: str = "accuracy") -> pd.DataFrame:
    """Does an early holdout score foretell a collapse? A run is *flagged* when its validation balanced accuracy at
    ``epoch`` (``val_curve``) is below ``warn_below``, and *collapsed* when its test ``metric`` is below ``below``
    (as in :func:`collapse_table`). Per dataset, label noise and head (Table 7's two heads, then both together):
    the 2 × 2 counts, sensitivity (flagged among collapsed) and specificity (not flagged among the rest) with exact
    Clopper–Pearson 95 % intervals; runs without a validated ``epoch`` are counted as such, never dropped silently."""
    from .stats import clopper_pearson

    for name, v in (("below", below), ("warn_below", warn_below)):
        if not 0.0 < v < 1.0:
            raise ValueError(f"{name} must be a fraction in (0, 1), got {v!r}")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise ValueError(f"epoch must be a positive integer, got {epoch!r}")

    def rate(k: int, n: int) -> str:
        if not n:
            return "–"
        lo, hi = clopper_pearson(k, n)
        return f"{k}/{n} ({k / n * 100:.0f} % [{lo * 100:.1f}, {hi * 100:.1f}])"

    groups: dict[tuple[str, float], dict[str, list[dict[str, Any]]]] = {}
    for (ds, variant, rate_), rs in _group(records, ("dataset", "rb", "label_noise"), _table7_head, {"rb": TABLE7_HEADS}):
        label = "with RB" if variant == "anchors + MHSA" else variant
        groups.setdefault((ds, rate_), {})[label] = list(rs)
    rows = []
    for (ds, noise), heads in sorted(groups.items()):
        for label, rs in [*heads.items(), *([("both heads", [r for v in heads.values() for r in v])] if len(heads) > 1 else [])]:
            n = {"tp": 0, "fp": 0, "fn": 0, "tn": 0, "no_epoch": 0}
            for r in rs:
                early = dict((int(e), float(v)) for e, v in (r.get("val_curve") or [])).get(epoch)
                if early is None:
                    n["no_epoch"] += 1
                    continue
                flagged, collapsed = early < warn_below, r[metric] < below
                n[("tp" if collapsed else "fp") if flagged else ("fn" if collapsed else "tn")] += 1
            rows.append({"dataset": ds, "label noise": f"{noise * 100:g}%", "head": label, "runs": len(rs),
                         "flag": f"epoch {epoch} holdout balanced < {warn_below * 100:g}%",
                         "flagged, collapsed": n["tp"], "flagged, trained": n["fp"], "not flagged, collapsed": n["fn"],
                         "not flagged, trained": n["tn"], "no such epoch": n["no_epoch"],
                         "sensitivity [95 % CI]": rate(n["tp"], n["tp"] + n["fn"]),
                         "specificity [95 % CI]": rate(n["tn"], n["tn"] + n["fp"])})
    return pd.DataFrame(rows, columns=["dataset", "label noise", "head", "runs", "flag", "flagged, collapsed",
                                       "flagged, trained", "not flagged, collapsed", "not flagged, trained",
                                       "no such epoch", "sensitivity [95 % CI]", "specificity [95 % CI]"])


def cluster_table(records: Sequence[dict[str, Any]], *, as_text: bool = True) -> pd.DataFrame:
    """Davies–Bouldin (↓) and Calinski–Harabasz (↑) of the test embeddings per dataset and head variant
    (clean labels, full loss)."""
    rows = []
    for (ds, variant), rs in _group(records, ("dataset", "rb"), lambda r: r["label_noise"] == 0 and _full_loss(r),
                                    {"rb": RB_VARIANTS}):
        db, ch = [r.get("davies_bouldin") for r in rs], [r.get("calinski_harabasz") for r in rs]
        rows.append({"dataset": ds, "variant": variant, "seeds": len(rs),
                     "Davies-Bouldin ↓": _fmt(db, 3, 1.0) if as_text else _mean(db),
                     "Calinski-Harabasz ↑": _fmt(ch, 1, 1.0) if as_text else _mean(ch)})
    return pd.DataFrame(rows, columns=["dataset", "variant", "seeds", "Davies-Bouldin ↓", "Calinski-Harabasz ↑"])


#: metrics the claims are judged on (record key -> label)
CLAIM_METRICS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1"}


def _by_seed(records: Sequence[dict[str, Any]], keep: Callable[[dict[str, Any]], bool]) -> dict[int, dict[str, Any]]:
    return {r["seed"]: r for r in records if keep(r)}


def claims_table(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The paper's claims, paired by seed per dataset (B − A in points, mean [95 % Student-t interval] (n)):

    * RB > without RB: *without RB* → *anchors + MHSA*, clean labels, full loss;
    * RB head > MLP head, both with L_cls: *without RB* → *anchors + MHSA* trained with L_cls alone (the head's
      architecture without the anchor and centre terms, Table 3's first row; the MLP head's loss is L_cls too);
    * L_cls + L_a + L_c best: *L_cls* → full and *L_cls + L_a* → full, the full head, clean labels;
    * RB more robust to label noise: *without RB* → *anchors + MHSA* at each injected noise rate > 0.

    ``verdict``: **reproduced** when the interval excludes 0 upwards, "opposite shown" when it excludes 0
    downwards, "not shown" otherwise; pairs missing a side are left out (a claim with none is not listed)."""
    from .stats import claim_verdict, format_difference, paired_difference

    full_head = lambda r: r["use_anchors"] and r["use_mhsa"]  # noqa: E731
    rows = []
    for ds in sorted({r["dataset"] for r in records}):
        rs = [r for r in records if r["dataset"] == ds]
        pairs = [("RB > without RB", "without RB → anchors + MHSA",
                  _by_seed(rs, lambda r: r["label_noise"] == 0 and r["rb"] == "without RB"),
                  _by_seed(rs, lambda r: r["label_noise"] == 0 and full_head(r) and r["loss"] == "L_cls + L_a + L_c"))]
        pairs.append(("RB head > MLP head, both L_cls", "without RB → anchors + MHSA (L_cls)", pairs[0][2],
                      _by_seed(rs, lambda r: r["label_noise"] == 0 and full_head(r) and r["loss"] == "L_cls")))
        for base in ("L_cls", "L_cls + L_a"):
            pairs.append(("L_cls + L_a + L_c best", f"{base} → L_cls + L_a + L_c",
                          _by_seed(rs, lambda r, b=base: r["label_noise"] == 0 and full_head(r) and r["loss"] == b),
                          pairs[0][3]))
        for rate in sorted({r["label_noise"] for r in rs if r["label_noise"] > 0}):
            pairs.append((f"RB more robust to {rate * 100:g} % label noise", "without RB → anchors + MHSA",
                          _by_seed(rs, lambda r, x=rate: r["label_noise"] == x and r["rb"] == "without RB"),
                          _by_seed(rs, lambda r, x=rate: r["label_noise"] == x and full_head(r)
                                   and r["loss"] == "L_cls + L_a + L_c")))
        for claim, arms, a, b in pairs:
            seeds = sorted(set(a) & set(b))
            if not seeds:
                continue
            for key, label in CLAIM_METRICS.items():
                if any(a[s].get(key) is None or b[s].get(key) is None for s in seeds):
                    continue
                d = paired_difference({s: float(a[s][key]) for s in seeds}, {s: float(b[s][key]) for s in seeds})
                verdict = claim_verdict(d, "b > a")
                rows.append({"dataset": ds, "claim": claim, "A → B": arms, "metric": label,
                             "A": f"{np.mean([a[s][key] for s in seeds]) * 100:.2f}",
                             "B": f"{np.mean([b[s][key] for s in seeds]) * 100:.2f}",
                             "B − A [95 % CI] (points)": format_difference(d), "verdict": verdict})
    return pd.DataFrame(rows, columns=["dataset", "claim", "A → B", "metric", "A", "B", "B − A [95 % CI] (points)",
                                       "verdict"])


def change_table(baseline: Sequence[dict[str, Any]], changed: Sequence[dict[str, Any]], change: str) -> pd.DataFrame:
    """The effect of one change of settings (``change``, e.g. ``model.kwargs.anchor_init=data``): every cell
    (dataset, head, loss, label noise) present in both record sets, B (``changed``) − A (``baseline``) paired by seed
    for accuracy, balanced accuracy and macro-F1, with the 95 % Student-t interval. ``verdict``: "B > A" / "B < A"
    when the interval excludes 0, else "no difference shown"."""
    from .stats import format_difference, paired_difference

    key = lambda r: (r["dataset"], r["rb"], r["loss"], r["label_noise"])  # noqa: E731
    rows = []
    for cell in sorted({key(r) for r in changed} & {key(r) for r in baseline}):
        a = _by_seed(baseline, lambda r, c=cell: key(r) == c)
        b = _by_seed(changed, lambda r, c=cell: key(r) == c)
        seeds = sorted(set(a) & set(b))
        if not seeds:
            continue
        for k, label in CLAIM_METRICS.items():
            if any(a[s].get(k) is None or b[s].get(k) is None for s in seeds):
                continue
            d = paired_difference({s: float(a[s][k]) for s in seeds}, {s: float(b[s][k]) for s in seeds})
            verdict = {"b > a": "B > A", "b < a": "B < A"}.get(d["verdict"], d["verdict"])
            rows.append({"dataset": cell[0], "variant": cell[1], "loss": cell[2], "label noise": f"{cell[3] * 100:g}%",
                         "change (B)": change, "metric": label, "seeds": " ".join(map(str, seeds)),
                         "A": f"{np.mean([a[s][k] for s in seeds]) * 100:.2f}",
                         "B": f"{np.mean([b[s][k] for s in seeds]) * 100:.2f}",
                         "B − A [95 % CI] (points)": format_difference(d), "verdict": verdict})
    return pd.DataFrame(rows, columns=["dataset", "variant", "loss", "label noise", "change (B)", "metric", "seeds", "A",
                                       "B", "B − A [95 % CI] (points)", "verdict"])


def epochs_table(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Per cell (dataset, head, loss, noise): ``epochs run (epoch kept)`` for each seed, from ``result.json``, with
    the last epoch's lead over the best earlier one (points of holdout balanced accuracy) where the last was kept,
    and the cell's rule-2 verdict (:mod:`fairexpr.evaluation.convergence`; ``–`` for records made before it)."""
    rows = []
    for (ds, variant, loss, noise), rs in _group(records, ("dataset", "rb", "loss", "label_noise"), lambda r: True,
                                                 {"rb": RB_VARIANTS, "loss": LOSS_VARIANTS}):
        rs = sorted(rs, key=lambda r: r["seed"])
        cells = [f"s{r['seed']}: {epochs_cell(r.get('epochs_run'), r.get('best_epoch'), r.get('rule2_last_lead'))}"
                 for r in rs]
        rows.append({"dataset": ds, "variant": variant, "loss": loss, "label noise": f"{noise * 100:g}%",
                     "epochs (best)": ", ".join(cells), "rule 2": rule2_verdict(rs)})
    return pd.DataFrame(rows, columns=["dataset", "variant", "loss", "label noise", "epochs (best)", "rule 2"])
