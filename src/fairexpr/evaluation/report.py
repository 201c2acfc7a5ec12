"""One self-contained HTML report comparing evaluation runs (``fairexpr report``).

Input contract (written by ``fairexpr eval``)::

    RUN_DIR/
      model.json                    checkpoint sidecar (``model.name``, ``config``, optional ``class_counts``)
      metrics.csv                   per-epoch log (epoch, train_loss, val_accuracy, val_balanced_accuracy, lr, ...)
      eval/<split>/metrics.json     :func:`fairexpr.evaluation.evaluate` dict + ``split``, ``dataset``,
                                    ``label_protocol``, ``checkpoint`` (optionally ``calibration``, see
                                    :func:`fairexpr.evaluation.calibration.calibration_summary`)
      eval/<split>/predictions.npz  optional: ``y_true``, ``probs``, ``embeddings``

A directory that directly holds a ``metrics.json`` is accepted too (if it is ``RUN/eval/<split>``,
the run's ``metrics.csv``/``model.json`` are found two levels up).

Output (``OUT_DIR``): ``report.html`` (all figures embedded as base64 PNG: the file works alone),
the PNGs themselves, ``report.json`` (every number) and ``report.md`` (the comparison table).
Optional parts that cannot be drawn (malformed ``metrics.csv``, too few points for t-SNE) are
skipped and listed under "Notes" in the report and ``warnings`` in ``report.json`` — never silently.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ..data.base import DataError
from . import plots
from .metrics import _json

__all__ = ["EvalRun", "build_report", "compare_table", "load_runs", "table_markdown"]

REQUIRED_KEYS = ("n", "classes", "accuracy", "balanced_accuracy", "per_class_accuracy", "confusion_matrix")

#: comparison-table columns: (column, metrics key, higher_is_better or None = not ranked)
TABLE_COLUMNS: tuple[tuple[str, str, bool | None], ...] = (
    ("n", "n", None),
    ("accuracy", "accuracy", True),
    ("balanced_accuracy", "balanced_accuracy", True),
    ("macro_f1", "macro_f1", True),
    ("min_class_acc", "per_class_accuracy_min", True),
    ("max_class_acc", "per_class_accuracy_max", None),  # descriptive: a collapsed model has the highest
    ("std_class_acc", "per_class_accuracy_std", False),
    ("gap", "per_class_accuracy_gap", False),
    ("ece", "ece", False),
)
_PERCENT = {"accuracy", "balanced_accuracy", "macro_f1", "min_class_acc", "max_class_acc", "std_class_acc", "gap", "ece"}


@dataclass
class EvalRun:
    """One evaluated split of one run."""

    name: str
    split: str
    metrics_path: Path
    metrics: dict[str, Any]
    run_dir: Path | None = None  # the training run's root, when known
    predictions_path: Path | None = None
    metrics_csv: Path | None = None
    sidecar: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.name} [{self.split}]"

    @property
    def model_name(self) -> str | None:
        m = (self.sidecar or {}).get("model")
        if isinstance(m, dict):
            return m.get("name")
        return m if isinstance(m, str) else None


# -------------------------------------------------------------------------------------- loading
def _read_metrics(path: Path) -> dict[str, Any]:
    try:
        m = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read metrics ({e})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: metrics.json is not valid JSON ({e})") from None
    if not isinstance(m, dict):
        raise DataError(f"{path}: expected a JSON object of metrics, got {type(m).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in m]
    if missing:
        raise DataError(f"{path}: metrics.json lacks {missing}; expected the output of "
                        "fairexpr.evaluation.evaluate (run `fairexpr eval` first)")
    k = len(m["classes"])
    cm = np.asarray(m["confusion_matrix"])
    if cm.shape != (k, k):
        raise DataError(f"{path}: confusion_matrix has shape {cm.shape}, expected ({k}, {k}) for classes {m['classes']}")
    return m


def _read_sidecar(path: Path, warnings: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        side = json.loads(path.read_text())
        if not isinstance(side, dict):
            raise ValueError("not a JSON object")
        return side
    except (OSError, ValueError) as e:
        warnings.append(f"{path}: sidecar ignored ({e})")
        return None


def _runs_in(path: Path) -> list[EvalRun]:
    if not path.exists():
        raise DataError(f"{path}: run directory does not exist")
    if path.is_file():
        if path.name == "metrics.json":
            path = path.parent
        else:
            raise DataError(f"{path}: expected a run directory (with eval/<split>/metrics.json) or a metrics.json")
    if (path / "metrics.json").is_file():
        split_dirs = [path]
        root = path.parent.parent if path.parent.name == "eval" else None
    else:
        root = path
        split_dirs = sorted(p.parent for p in (path / "eval").glob("*/metrics.json")) if (path / "eval").is_dir() else []
        if not split_dirs:
            raise DataError(f"{path}: no evaluation metrics found; expected {path}/eval/<split>/metrics.json "
                            f"(run `fairexpr eval` on this run first) or a directory holding metrics.json")
    out = []
    for d in split_dirs:
        warns: list[str] = []
        m = _read_metrics(d / "metrics.json")
        side = _read_sidecar(root / "model.json", warns) if root is not None else None
        csv = root / "metrics.csv" if root is not None and (root / "metrics.csv").is_file() else None
        if csv is None and (d / "metrics.csv").is_file():
            csv = d / "metrics.csv"
        name = (root or d).resolve().name
        out.append(EvalRun(name=name, split=str(m.get("split") or d.name), metrics_path=d / "metrics.json", metrics=m,
                           run_dir=root, predictions_path=d / "predictions.npz" if (d / "predictions.npz").is_file() else None,
                           metrics_csv=csv, sidecar=side, warnings=warns))
    return out


def load_runs(run_dirs: Iterable[str | os.PathLike]) -> list[EvalRun]:
    """Find every ``eval/<split>/metrics.json`` under the given run directories (see module doc).
    Raises :class:`~fairexpr.data.base.DataError` naming the directory when one holds no metrics."""
    runs: list[EvalRun] = []
    for p in run_dirs:
        runs += _runs_in(Path(p))
    if not runs:
        raise DataError("report: no run directories given")
    # disambiguate equal names of *different* runs (e.g. two `.../seed0` dirs) with their parent folder; the
    # splits of one run share its name
    roots: dict[str, set[Path]] = {}
    for r in runs:
        roots.setdefault(r.name, set()).add((r.run_dir or r.metrics_path.parent).resolve())
    for r in runs:
        if len(roots[r.name]) > 1 and r.run_dir is not None:
            r.name = f"{r.run_dir.resolve().parent.name}/{r.name}"
    labels = [r.label for r in runs]
    for r in runs:
        if labels.count(r.label) > 1:  # still ambiguous: the last folders of the metrics path (never absolute)
            r.name = "/".join(r.metrics_path.parent.resolve().parts[-3:])
    return runs


# ---------------------------------------------------------------------------------------- table
def compare_table(runs: Sequence[EvalRun] | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """The papers' ablation-table shape: one row per (run, split) with ``run, model, dataset, split,
    protocol, n, accuracy, balanced_accuracy, macro_f1, min_class_acc, max_class_acc, std_class_acc,
    gap, ece`` (fractions in [0, 1]; ``NaN`` where a metric is unavailable). Accepts loaded
    :class:`EvalRun` objects or run directories."""
    runs = list(runs)
    if runs and not isinstance(runs[0], EvalRun):
        runs = load_runs(runs)  # type: ignore[arg-type]
    rows = []
    for r in runs:
        m = r.metrics
        row: dict[str, Any] = {"run": r.name, "model": r.model_name or "", "dataset": short_dataset(m.get("dataset")),
                               "split": r.split, "protocol": str(m.get("label_protocol") or "")}
        for col, key, _ in TABLE_COLUMNS:
            v = m.get(key)
            row[col] = int(v) if col == "n" else (np.nan if v is None else float(v))
        rows.append(row)
    return pd.DataFrame(rows)


def short_dataset(spec: Any) -> str:
    """``FORMAT:/long/absolute/path/CK+48`` -> ``ckplus:CK+48``: the table names a dataset by its format and
    folder, never by an absolute path (the full address stays in report.json)."""
    s = str(spec or "")
    fmt, sep, path = s.partition(":")
    if not sep or not path:
        return s
    return f"{fmt}:{Path(path).name or path}"


def _best(df: pd.DataFrame) -> dict[str, set[int]]:
    """Row positions holding the best value of each ranked column (ties all marked), compared only among rows of
    the same dataset and split: figures on different test sets are not comparable, so a group of one row marks
    nothing."""
    best: dict[str, set[int]] = {}
    if df.empty:
        return best
    keys = list(zip(df["dataset"], df["split"])) if {"dataset", "split"} <= set(df.columns) else [("", "")] * len(df)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    for col, _, higher in TABLE_COLUMNS:
        if higher is None or col not in df:
            continue
        v = df[col].to_numpy(dtype=float)
        for rows in groups.values():
            g = v[rows]
            if len(rows) < 2 or not np.isfinite(g).any():
                continue
            target = np.nanmax(g) if higher else np.nanmin(g)
            best.setdefault(col, set()).update(i for i in rows if np.isfinite(v[i]) and
                                               np.isclose(v[i], target, rtol=0, atol=1e-12))
    return best


def _fmt(col: str, v: Any) -> str:
    if isinstance(v, float) and not np.isfinite(v):
        return "–"
    if col in _PERCENT:
        return f"{100 * float(v):.2f}"
    return str(v)


def table_markdown(df: pd.DataFrame) -> str:
    """Markdown of :func:`compare_table` (metrics in %, the best value per column in bold)."""
    best = _best(df)
    cols = list(df.columns)
    head = [c + (" (%)" if c in _PERCENT else "") for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if c in _PERCENT or c == "n" else "---" for c in cols) + "|"]
    for i, row in enumerate(df.itertuples(index=False)):
        cells = []
        for c, v in zip(cols, row):
            s = _fmt(c, v).replace("|", "\\|")
            cells.append(f"**{s}**" if i in best.get(c, ()) else s)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _table_html(df: pd.DataFrame) -> str:
    best = _best(df)
    cols = list(df.columns)
    out = ["<table class='cmp'><thead><tr>"]
    out += [f"<th>{html.escape(c.replace('_', ' '))}{' (%)' if c in _PERCENT else ''}</th>" for c in cols]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(df.itertuples(index=False)):
        out.append("<tr>")
        for c, v in zip(cols, row):
            cls = " class='best'" if i in best.get(c, ()) else ""
            out.append(f"<td{cls}>{html.escape(_fmt(c, v))}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


# --------------------------------------------------------------------------------------- report
def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_.")[:80] or "run"


def _class_counts(side: dict[str, Any] | None, classes: Sequence[str]) -> list[int] | None:
    """Training class counts from the sidecar: ``class_counts`` at top level or under
    ``data``/``data_info``/``train`` — a list in class order or a ``{class: count}`` mapping."""
    if not side:
        return None
    for holder in (side, side.get("data"), side.get("data_info"), side.get("train")):
        if isinstance(holder, dict) and holder.get("class_counts") is not None:
            cc = holder["class_counts"]
            if isinstance(cc, dict):
                return [int(cc.get(c, 0)) for c in classes]
            if isinstance(cc, (list, tuple)) and len(cc) == len(classes):
                return [int(v) for v in cc]
            return None
    return None


def _train_set_key(r: EvalRun) -> tuple[Any, ...]:
    side_classes = list((r.sidecar or {}).get("classes") or r.metrics.get("classes") or [])
    counts = _class_counts(r.sidecar, side_classes)
    data = (r.sidecar or {}).get("data") or {}
    return (short_dataset(data.get("train")), data.get("train_split"), tuple(side_classes), tuple(counts or ()))


def _atomic_text(path: Path, text: str) -> None:
    plots.atomic_write(path, text.encode("utf-8"))


def _load_predictions(r: EvalRun) -> dict[str, np.ndarray] | None:
    if r.predictions_path is None:
        return None
    try:
        with np.load(r.predictions_path, allow_pickle=False) as z:
            pred = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        r.warnings.append(f"{r.predictions_path}: unreadable predictions ({e}); t-SNE skipped")
        return None
    y = pred.get("y_true")
    if y is None or y.shape[0] != int(r.metrics["n"]):
        r.warnings.append(f"{r.predictions_path}: y_true missing or of length != n={r.metrics['n']}; t-SNE skipped")
        return None
    return pred


def build_report(run_dirs: Iterable[str | os.PathLike], out_dir: str | os.PathLike, title: str | None = None,
                 *, tsne_max_points: int = plots.TSNE_MAX_POINTS, tsne_max_iter: int = 1000,
                 seed: int = 0, tsne: bool = True) -> Path:
    """Write ``report.html`` (self-contained), the PNGs, ``report.json`` and ``report.md`` to
    ``out_dir``; returns the HTML path. t-SNE runs on at most ``tsne_max_points`` embeddings per
    evaluation (seeded subsample) for ``tsne_max_iter`` steps; ``tsne=False`` skips it (it is most of a report's
    build time). One class-imbalance chart is drawn per distinct training set, however many runs used it."""
    runs = load_runs(run_dirs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = title or "fairexpr evaluation report"
    df = compare_table(runs)
    warnings: list[str] = []
    figures: dict[str, list[dict[str, str]]] = {k: [] for k in
                                               ("per_class", "confusion", "reliability", "tsne", "curves", "imbalance")}

    def add(section: str, path: Path, caption: str) -> None:
        figures[section].append({"file": path.name, "caption": caption})

    # per-class bars + lines, one pair per distinct class list
    by_classes: dict[tuple[str, ...], list[EvalRun]] = {}
    for r in runs:
        by_classes.setdefault(tuple(r.metrics["classes"]), []).append(r)
    for gi, (classes, group) in enumerate(by_classes.items()):
        series = {r.label: [r.metrics["per_class_accuracy"].get(c) for c in classes] for r in group}
        sfx = f"_{gi}" if len(by_classes) > 1 else ""
        add("per_class", plots.plot_per_class_bars(series, classes, out / f"per_class_bars{sfx}.png"),
            f"Per-class accuracy, {len(group)} run(s) side by side")
        add("per_class", plots.plot_per_class_lines(series, classes, out / f"per_class_lines{sfx}.png"),
            "Per-class accuracy across runs")

    done_roots: set[Path] = set()
    done_train_sets: set[tuple[Any, ...]] = set()
    train_users: dict[tuple[Any, ...], list[str]] = {}
    for q in runs:
        names = train_users.setdefault(_train_set_key(q), [])
        if q.name not in names:
            names.append(q.name)
    for i, r in enumerate(runs):
        m, classes = r.metrics, list(r.metrics["classes"])
        slug = f"{i:02d}_{_slug(r.name)}_{_slug(r.split)}"
        add("confusion", plots.plot_confusion_matrix(m["confusion_matrix"], classes, out / f"confusion_{slug}.png",
                                                     title=f"{r.label}: confusion (row-normalised)"),
            f"{r.label}: n={m['n']}, accuracy {100 * m['accuracy']:.2f}%, balanced {100 * m['balanced_accuracy']:.2f}%")
        cal = m.get("calibration") if isinstance(m.get("calibration"), dict) else None
        if cal and cal.get("reliability_before") and cal.get("reliability_after"):
            add("reliability", plots.plot_reliability(cal["reliability_before"], out / f"reliability_{slug}.png",
                                                      after=cal["reliability_after"], title=r.label),
                f"{r.label}: before / after temperature scaling (T = {cal.get('temperature', float('nan')):.3g})")
        elif m.get("reliability"):
            rel = dict(m["reliability"], ece=m.get("ece"))
            add("reliability", plots.plot_reliability(rel, out / f"reliability_{slug}.png", title=r.label),
                f"{r.label}: reliability (15 bins)")
        pred = _load_predictions(r) if tsne else None
        if pred is not None and "embeddings" in pred:
            emb = pred["embeddings"]
            try:
                path = plots.plot_tsne(emb.reshape(emb.shape[0], -1), pred["y_true"], classes, out / f"tsne_{slug}.png",
                                       max_points=tsne_max_points, seed=seed, max_iter=tsne_max_iter,
                                       title=f"{r.label}: t-SNE")
                cl = m.get("cluster") or {}
                extra = ""
                if cl.get("davies_bouldin") is not None:
                    extra = (f"; Davies–Bouldin {cl['davies_bouldin']:.3f}, "
                             f"Calinski–Harabasz {cl['calinski_harabasz']:.1f}")
                add("tsne", path, f"{r.label}: t-SNE of {emb.shape[0]} embeddings (≤ {tsne_max_points} shown){extra}")
            except ValueError as e:
                r.warnings.append(f"{r.predictions_path}: t-SNE skipped ({e})")
        root = r.run_dir.resolve() if r.run_dir is not None else r.metrics_path.parent.resolve()
        if root in done_roots:
            continue
        done_roots.add(root)
        if r.metrics_csv is not None:
            try:
                add("curves", plots.plot_training_curves(r.metrics_csv, out / f"curves_{slug}.png", title=r.name),
                    f"{r.name}: training curves ({r.metrics_csv.name})")
            except (ValueError, FileNotFoundError) as e:
                r.warnings.append(f"training curves skipped: {e}")
        train_set = _train_set_key(r)
        side_classes, counts = list(train_set[2]), list(train_set[3])
        if sum(counts) > 0 and train_set not in done_train_sets:
            done_train_sets.add(train_set)
            users = train_users[train_set]
            name = train_set[0] + (f" [{train_set[1]}]" if train_set[1] else "") if train_set[0] else r.name
            add("imbalance", plots.plot_imbalance(counts, side_classes, out / f"imbalance_{slug}.png",
                                                  title=f"{name}: training class counts"),
                f"{name}: training counts per class, ratio N_k / min_j N_j (used by {', '.join(users)})")
    for r in runs:
        warnings += r.warnings

    md = table_markdown(df)
    _atomic_text(out / "report.md", f"# {title}\n\n{md}")
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    from .. import __version__

    payload = {
        "title": title, "created": created, "fairexpr_version": __version__,
        "table": json.loads(df.to_json(orient="records")),
        "runs": [{"name": r.name, "split": r.split, "run_dir": str(r.run_dir) if r.run_dir else None,
                  "metrics_path": str(r.metrics_path), "model": r.model_name,
                  "predictions": str(r.predictions_path) if r.predictions_path else None,
                  "metrics": r.metrics} for r in runs],
        "figures": figures, "warnings": warnings,
    }
    _atomic_text(out / "report.json", json.dumps(_json(payload), indent=2, allow_nan=False))
    html_path = out / "report.html"
    _atomic_text(html_path, _render_html(title, created, df, runs, figures, warnings, out))
    return html_path


# ------------------------------------------------------------------------------------------ html
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{margin-bottom:0}.meta{color:#666;margin-top:.3em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}td.best{font-weight:bold;background:#dff3df}
figure{display:inline-block;margin:.5em;vertical-align:top;max-width:100%}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555;max-width:640px}.note{color:#8a5300}code{background:#f6f6f6;padding:0 .2em}
"""


def _img(out: Path, fig: dict[str, str]) -> str:
    data = base64.b64encode((out / fig["file"]).read_bytes()).decode("ascii")
    cap = html.escape(fig["caption"])
    return (f"<figure><img alt='{cap}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{cap}</figcaption></figure>")


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.2f}"


def _run_details(r: EvalRun) -> str:
    m = r.metrics
    classes = list(m["classes"])
    difc = m.get("difc_confusion") or {}
    f1 = m.get("per_class_f1") or {}
    rows = ["<table><thead><tr><th>class</th><th>n</th><th>predicted</th><th>accuracy (%)</th><th>F1 (%)</th>"
            "<th>DIFC conf<sub>k</sub></th><th>mean top-2 gap</th></tr></thead><tbody>"]
    inf = set(difc.get("score_is_inf") or [])
    for c in classes:
        score = difc.get("score", {}).get(c)
        s = "∞" if c in inf else ("–" if score is None else f"{score:.3f}")
        gap = difc.get("mean_top2_gap", {}).get(c)
        rows.append(f"<tr><td>{html.escape(c)}</td><td>{m.get('n_per_class', {}).get(c, '–')}</td>"
                    f"<td>{(m.get('pred_per_class') or {}).get(c, '–')}</td>"
                    f"<td>{_pct(m['per_class_accuracy'].get(c))}</td><td>{_pct(f1.get(c))}</td>"
                    f"<td>{s}</td><td>{'–' if gap is None else f'{gap:.3f}'}</td></tr>")
    rows.append("</tbody></table>")
    facts = [f"split <code>{html.escape(r.split)}</code>",
             f"dataset <code>{html.escape(str(m.get('dataset') or '?'))}</code>",
             f"label protocol <code>{html.escape(str(m.get('label_protocol') or '?'))}</code>",
             f"n = {m['n']}"]
    if m.get("checkpoint"):
        facts.append(f"checkpoint <code>{html.escape(str(m['checkpoint']))}</code>")
    if r.model_name:
        facts.append(f"model <code>{html.escape(r.model_name)}</code>")
    extra = []
    if m.get("absent_classes"):
        extra.append(f"Classes absent from this split (excluded from per-class aggregates): "
                     f"{html.escape(', '.join(m['absent_classes']))}.")
    if difc.get("order"):
        extra.append("DIFC confusion order (most confusing first): " + html.escape(" → ".join(difc["order"])) + ".")
    cal = m.get("nll"), m.get("brier"), m.get("ece")
    if cal[0] is not None:
        extra.append(f"NLL {cal[0]:.4f}, Brier {cal[1]:.4f}, ECE {100 * cal[2]:.2f}%.")
    if isinstance(m.get("calibration"), dict) and m["calibration"].get("after"):
        c = m["calibration"]
        extra.append(f"Temperature scaling T = {c.get('temperature', float('nan')):.3f}: ECE "
                     f"{_pct(c['before'].get('ece'))}% → {_pct(c['after'].get('ece'))}%, NLL "
                     f"{c['before'].get('nll', float('nan')):.4f} → {c['after'].get('nll', float('nan')):.4f}.")
    soft = m.get("soft")
    if soft:
        extra.append(f"Against vote distributions: soft accuracy {_pct(soft.get('soft_accuracy'))}%, "
                     f"KL {soft.get('kl_divergence', float('nan')):.4f}.")
    return (f"<h3>{html.escape(r.label)}</h3><p>{'; '.join(facts)}</p>" + "".join(rows)
            + "".join(f"<p>{e}</p>" for e in extra))


def _render_html(title: str, created: str, df: pd.DataFrame, runs: list[EvalRun],
                 figures: dict[str, list[dict[str, str]]], warnings: list[str], out: Path) -> str:
    from .. import __version__

    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
             f"<p class='meta'>fairexpr {__version__} · {created} · {len(runs)} evaluation(s)</p>",
             "<h2>Comparison</h2><p>Metrics in %; best value per column in bold among the rows of the same dataset and split (highest, or lowest for "
             "std, gap and ECE; max-class accuracy is not ranked: a model that calls every face the majority class "
             "has the highest). Balanced accuracy is the mean per-class accuracy over the classes present in "
             "the split; std is the population std of per-class accuracy; ECE uses 15 equal-width bins.</p>",
             _table_html(df)]
    sections = (("per_class", "Per-class accuracy"), ("confusion", "Confusion matrices"),
                ("reliability", "Reliability diagrams"), ("tsne", "Embeddings (t-SNE)"),
                ("curves", "Training curves"), ("imbalance", "Training-set imbalance"))
    for key, head in sections:
        if figures[key]:
            parts.append(f"<h2>{head}</h2>" + "".join(_img(out, f) for f in figures[key]))
    parts.append("<h2>Per-run details</h2>" + "".join(_run_details(r) for r in runs))
    if warnings:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li class='note'>{html.escape(w)}</li>" for w in warnings) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
