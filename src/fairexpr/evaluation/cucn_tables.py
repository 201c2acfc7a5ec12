"""CUCN's reports from finished run directories (Fan et al. 2022): the Table II shape and Fig. 4.

* :func:`table2` — one row per run: max, min and overall accuracy (Table II), plus balanced accuracy,
  the max-min gap and n, as a pandas DataFrame; :func:`table2_markdown` renders it.
* :func:`plot_fig4` — per-class accuracy as one line per run across the classes (Fig. 4), drawn with
  :func:`fairexpr.evaluation.plots.plot_per_class_lines`.

A run is read from ``<run>/eval/<split>/metrics.json`` (written by ``fairexpr train``/``fairexpr eval``);
a path to a ``metrics.json`` itself is accepted too. Command line::

    python -m fairexpr.evaluation.cucn_tables RUN [RUN ...] --split test --out reports/cucn [--names a,b,...]
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from .._io import atomic_write_text
from ..errors import CheckpointError

RunsLike = Mapping[str, "str | os.PathLike"] | Sequence["str | os.PathLike"]
COLUMNS = ("run", "max_class_acc", "min_class_acc", "accuracy", "balanced_accuracy", "gap", "n")
_NEEDED = ("accuracy", "balanced_accuracy", "per_class_accuracy", "per_class_accuracy_min", "per_class_accuracy_max")


def metrics_path(run: str | os.PathLike, split: str = "test") -> Path:
    """``<run>/eval/<split>/metrics.json`` (or ``run`` itself when it is a ``.json`` file)."""
    p = Path(run)
    return p if p.suffix == ".json" else p / "eval" / split / "metrics.json"


def load_metrics(run: str | os.PathLike, split: str = "test") -> dict[str, Any]:
    """The evaluation metrics of one run; :class:`CheckpointError` naming the file when absent or incomplete."""
    p = metrics_path(run, split)
    if not p.is_file():
        avail = sorted(d.name for d in (Path(run) / "eval").iterdir() if d.is_dir()) if (Path(run) / "eval").is_dir() else []
        raise CheckpointError(f"{p}: no evaluation of split {split!r} in run {str(run)!r}"
                              + (f" (evaluated: {', '.join(avail)})" if avail else " (no eval/ folder)"))
    try:
        m = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p}: not valid JSON ({e})") from None
    missing = [k for k in _NEEDED if k not in m]
    if missing or not isinstance(m.get("per_class_accuracy"), dict):
        raise CheckpointError(f"{p}: metrics file lacks {missing or ['per_class_accuracy (a mapping)']}")
    return m


def _named(runs: RunsLike) -> dict[str, Path]:
    if isinstance(runs, Mapping):
        out = {str(k): Path(v) for k, v in runs.items()}
    else:
        out = {}
        for r in runs:
            p = Path(r)
            name = p.parent.parent.parent.name if p.suffix == ".json" else p.name
            if name in out:
                raise ValueError(f"two runs are both named {name!r}; pass a mapping name -> run directory")
            out[name] = p
    if not out:
        raise ValueError("need at least one run")
    return out


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def table2(runs: RunsLike, split: str = "test") -> pd.DataFrame:
    """Table II shape: one row per run with max/min per-class accuracy, overall and balanced accuracy,
    the max-min gap and the number of test images (fractions in [0, 1])."""
    rows = []
    for name, run in _named(runs).items():
        m = load_metrics(run, split)
        hi, lo = _num(m["per_class_accuracy_max"]), _num(m["per_class_accuracy_min"])
        rows.append({"run": name, "max_class_acc": hi, "min_class_acc": lo, "accuracy": _num(m["accuracy"]),
                     "balanced_accuracy": _num(m["balanced_accuracy"]),
                     "gap": _num(m.get("per_class_accuracy_gap", hi - lo)), "n": int(m.get("n", 0))})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def per_class_table(runs: RunsLike, split: str = "test") -> pd.DataFrame:
    """Per-class accuracy, one row per run, one column per class (the classes of the first run, in its
    order, then any others); NaN where a run lacks a class."""
    data: dict[str, dict[str, float]] = {}
    classes: list[str] = []
    for name, run in _named(runs).items():
        pc = load_metrics(run, split)["per_class_accuracy"]
        classes += [c for c in pc if c not in classes]
        data[name] = {c: _num(v) for c, v in pc.items()}
    return pd.DataFrame.from_dict(data, orient="index", columns=classes)


def table2_markdown(df: pd.DataFrame, digits: int = 1) -> str:
    """Render :func:`table2` as a Markdown table, accuracies in percent."""
    head = "| run | max class acc (%) | min class acc (%) | overall acc (%) | balanced acc (%) | gap (pp) | n |"
    lines = [head, "|---|---|---|---|---|---|---|"]

    def pct(v: float) -> str:
        return "—" if v is None or math.isnan(v) else f"{100 * v:.{digits}f}"

    for r in df.itertuples(index=False):
        lines.append(f"| {r.run} | {pct(r.max_class_acc)} | {pct(r.min_class_acc)} | {pct(r.accuracy)} | "
                     f"{pct(r.balanced_accuracy)} | {pct(r.gap)} | {r.n} |")
    return "\n".join(lines) + "\n"


def plot_fig4(runs: RunsLike, path: str | os.PathLike, split: str = "test", title: str | None = None) -> Path:
    """Per-class accuracy lines across runs (CUCN Fig. 4) written as a PNG to ``path``."""
    from .plots import plot_per_class_lines

    pc = per_class_table(runs, split)
    lines = {name: [None if math.isnan(v) else v for v in row] for name, row in zip(pc.index, pc.to_numpy().tolist())}
    return plot_per_class_lines(lines, list(pc.columns), path,
                                title=title or f"Per-class accuracy ({split})")


def write_report(runs: RunsLike, out_dir: str | os.PathLike, split: str = "test", title: str | None = None) -> dict[str, Path]:
    """Write ``table2.csv``, ``table2.md``, ``per_class.csv`` and ``fig4_per_class.png`` to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t2 = table2(runs, split)
    atomic_write_text(out / "table2.csv", t2.to_csv(index=False))
    atomic_write_text(out / "table2.md", table2_markdown(t2))
    atomic_write_text(out / "per_class.csv", per_class_table(runs, split).to_csv(index_label="run"))
    fig = plot_fig4(runs, out / "fig4_per_class.png", split, title)
    return {"table2_csv": out / "table2.csv", "table2_md": out / "table2.md", "per_class_csv": out / "per_class.csv",
            "fig4": fig}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="CUCN Table II (max/min/overall accuracy) and Fig. 4 from run directories")
    ap.add_argument("runs", nargs="+", help="run directories (or metrics.json files)")
    ap.add_argument("--split", default="test", help="evaluated role/split under <run>/eval/ (default: test)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--names", help="comma-separated display names, one per run")
    a = ap.parse_args(argv)
    runs: RunsLike = a.runs
    if a.names:
        names = [n.strip() for n in a.names.split(",")]
        if len(names) != len(a.runs):
            ap.error(f"--names has {len(names)} names for {len(a.runs)} runs")
        runs = dict(zip(names, a.runs))
    paths = write_report(runs, a.out, a.split)
    print(paths["table2_md"].read_text(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
