"""Figures of the evaluation report, drawn with matplotlib's Agg canvas (no display, no pyplot
global state) and written atomically (temp file + ``os.replace``), so a crash never leaves a
half-written PNG. Every function takes plain arrays/dicts and an output path and returns the path.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "atomic_write",
    "plot_confusion_matrix",
    "plot_imbalance",
    "plot_per_class_bars",
    "plot_per_class_lines",
    "plot_reliability",
    "plot_training_curves",
    "plot_tsne",
    "save_figure",
]

DPI = 110
TSNE_MAX_POINTS = 2000


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Render ``fig`` to PNG and write it atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    atomic_write(path, buf.getvalue())
    return path


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """:func:`fairexpr._io.atomic_write_bytes` (temp file + rename, mode 0666 & ~umask)."""
    from .._io import atomic_write_bytes

    atomic_write_bytes(path, data)


def _legend_outside(ax: Any, fontsize: int = 8) -> None:
    """The legend to the right of the axes, where it cannot cover a bar or a line (``save_figure`` crops
    tightly, so the figure grows to hold it)."""
    ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)


def _nan(values: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def plot_confusion_matrix(counts: Any, classes: Sequence[str], path: str | os.PathLike,
                          title: str | None = None) -> Path:
    """Row-normalised confusion-matrix heatmap (rows = true class) with counts annotated per cell."""
    cm = np.asarray(counts, dtype=np.int64)
    k = len(classes)
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix: expected shape ({k}, {k}) for classes {list(classes)}, got {cm.shape}")
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    size = max(4.0, 0.75 * k + 1.5)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    for i in range(k):
        for j in range(k):
            colour = "white" if norm[i, j] > 0.5 else "black"
            ax.text(j, i, f"{norm[i, j]:.2f}\n({cm[i, j]})", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(k), labels=classes, rotation=45, ha="right")
    ax.set_yticks(range(k), labels=[f"{c} (n={int(r)})" for c, r in zip(classes, rows[:, 0])])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "Confusion matrix (row-normalised, counts in brackets)")
    return save_figure(fig, path)


def plot_per_class_bars(runs: Mapping[str, Sequence[float | None]], classes: Sequence[str],
                        path: str | os.PathLike, title: str | None = None) -> Path:
    """Grouped bars: per-class accuracy of several runs side by side (``None`` = class absent)."""
    if not runs:
        raise ValueError("per-class bars: need at least one run")
    k = len(classes)
    width = 0.8 / len(runs)
    fig = Figure(figsize=(max(6.0, 1.1 * k + 0.4 * len(runs)), 4))
    ax = fig.add_subplot()
    x = np.arange(k)
    absent = np.ones(k, dtype=bool)
    for r, (name, acc) in enumerate(runs.items()):
        a = _nan(acc)
        if a.size != k:
            raise ValueError(f"per-class bars: run {name!r} has {a.size} values for {k} classes")
        ok = np.isfinite(a)  # a class the run's test set lacks gets no bar (not a 0 % bar)
        absent &= ~ok
        ax.bar(x[ok] - 0.4 + width * (r + 0.5), a[ok] * 100, width, label=name)
    for i in np.flatnonzero(absent):
        ax.text(x[i], 2, "absent", ha="center", va="bottom", fontsize=8, color="gray", rotation=90)
    ax.set_xticks(x, labels=classes, rotation=30, ha="right")
    ax.set_ylabel("per-class accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    _legend_outside(ax)
    ax.set_title(title or "Per-class accuracy")
    return save_figure(fig, path)


def plot_per_class_lines(runs: Mapping[str, Sequence[float | None]], classes: Sequence[str],
                         path: str | os.PathLike, title: str | None = None) -> Path:
    """Per-class accuracy as one line per run across the classes (the shape of CUCN's Fig. 4); gaps
    where a class is absent."""
    if not runs:
        raise ValueError("per-class lines: need at least one run")
    k = len(classes)
    fig = Figure(figsize=(max(6.0, 0.9 * k), 4))
    ax = fig.add_subplot()
    for name, acc in runs.items():
        a = _nan(acc)
        if a.size != k:
            raise ValueError(f"per-class lines: run {name!r} has {a.size} values for {k} classes")
        ax.plot(np.arange(k), a * 100, marker="o", label=name)
    ax.set_xticks(np.arange(k), labels=classes, rotation=30, ha="right")
    ax.set_ylabel("per-class accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    ax.set_title(title or "Per-class accuracy across runs")
    return save_figure(fig, path)


def plot_imbalance(counts: Sequence[int], classes: Sequence[str], path: str | os.PathLike,
                   title: str | None = None) -> Path:
    """Samples per class with the imbalance ratio ``N_k / min_j N_j`` (DIFC Eq. 1) on each bar
    (the minimum runs over non-empty classes)."""
    c = np.asarray(counts, dtype=np.int64)
    if c.size != len(classes):
        raise ValueError(f"imbalance chart: {c.size} counts for {len(classes)} classes")
    if c.sum() <= 0 or c.min() < 0:
        raise ValueError("imbalance chart: counts must be non-negative with a positive total")
    m = c[c > 0].min()
    fig = Figure(figsize=(max(6.0, 0.9 * len(classes)), 4))
    ax = fig.add_subplot()
    bars = ax.bar(range(c.size), c, color="tab:orange")
    for b, v in zip(bars, c):
        ax.annotate(f"{v}\n×{v / m:.1f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(c.size), labels=classes, rotation=30, ha="right")
    ax.set_ylabel("samples")
    ax.set_ylim(0, c.max() * 1.25)
    ratio = f"max/min ratio {c.max() / m:.1f}"
    ax.set_title(f"{title} ({ratio})" if title else f"Class counts ({ratio})")
    return save_figure(fig, path)


def plot_reliability(before: Mapping[str, Any], path: str | os.PathLike,
                     after: Mapping[str, Any] | None = None, title: str | None = None) -> Path:
    """Reliability diagram(s) from :func:`~fairexpr.evaluation.calibration.reliability_diagram`
    data: per-bin accuracy (bars) and mean confidence (markers) against the diagonal, samples per bin
    below; a second column when ``after`` is given (e.g. after temperature scaling)."""
    panels = [("before" if after is not None else "", before)] + ([("after", after)] if after is not None else [])
    fig = Figure(figsize=(4.4 * len(panels), 5.2))
    grid = fig.add_gridspec(2, len(panels), height_ratios=[3, 1], hspace=0.08)
    for i, (tag, rel) in enumerate(panels):
        for key in ("edges", "accuracy", "count"):
            if key not in rel:
                raise ValueError(f"reliability data: missing key {key!r}")
        edges = np.asarray(rel["edges"], dtype=np.float64)
        acc = _nan(rel["accuracy"])
        conf = _nan(rel.get("confidence", [None] * acc.size))
        cnt = np.asarray(rel["count"], dtype=np.float64)
        if edges.size != acc.size + 1 or cnt.size != acc.size or conf.size != acc.size:
            raise ValueError("reliability data: need len(edges) == len(accuracy) + 1 == len(count) + 1")
        centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        ax = fig.add_subplot(grid[0, i])
        ax.bar(centers, np.nan_to_num(acc), width, edgecolor="black", color="tab:blue", alpha=0.8, label="accuracy")
        ax.plot(centers, conf, "o", color="tab:red", ms=4, label="mean confidence")
        ax.vlines(centers, np.fmin(acc, conf), np.fmax(acc, conf), color="tab:red", lw=1.5)
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ticks = np.linspace(0, 1, 6)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        # hide only this panel's tick labels (set_xticklabels([]) would blank the shared lower axis too)
        ax.tick_params(axis="x", labelbottom=False)
        ax.set_ylabel("accuracy")
        ece = rel.get("ece")
        name = f"{tag}: " if tag else ""
        ax.set_title(f"{name}ECE = {ece * 100:.2f}%" if ece is not None else f"{name}reliability")
        if i == 0:  # one legend for all panels, under them: it covers no bar
            fig.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="lower center", ncol=3, frameon=False,
                       bbox_to_anchor=(0.5, -0.06))
        low = fig.add_subplot(grid[1, i], sharex=ax)
        low.bar(centers, cnt, width, color="gray", edgecolor="black")
        low.set_xlim(0, 1)
        low.set_xticks(ticks, labels=[f"{t:.1f}" for t in ticks])
        low.tick_params(axis="x", labelbottom=True)
        low.set_xlabel("confidence (top-label)")
        low.set_ylabel("samples")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_tsne(embeddings: Any, labels: Any, classes: Sequence[str], path: str | os.PathLike,
              max_points: int = TSNE_MAX_POINTS, seed: int = 0, max_iter: int = 1000,
              title: str | None = None) -> Path:
    """2-D t-SNE (scikit-learn) of ``embeddings [N, D]`` coloured by class; a seeded, class-stratified
    random subsample of at most ``max_points`` points keeps it fast. Perplexity ``min(30, (n−1)/3)``;
    ``max_iter`` optimisation steps (scikit-learn's minimum is 250)."""
    from sklearn.manifold import TSNE

    e = np.asarray(embeddings, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    if e.ndim != 2 or e.shape[0] != y.shape[0]:
        raise ValueError(f"t-SNE: embeddings must be [N={y.shape[0]}, D], got {e.shape}")
    if e.shape[0] < 5:
        raise ValueError(f"t-SNE: need at least 5 points, got {e.shape[0]}")
    if not np.all(np.isfinite(e)):
        raise ValueError("t-SNE: embeddings contain NaN or inf")
    idx = np.arange(e.shape[0])
    if idx.size > max_points:
        from sklearn.model_selection import train_test_split

        strat = y if np.min(np.bincount(y)[np.unique(y)]) >= 2 else None
        idx, _ = train_test_split(idx, train_size=max_points, random_state=seed, stratify=strat)
        idx = np.sort(idx)
    e, y = e[idx], y[idx]
    perplexity = float(min(30.0, (e.shape[0] - 1) / 3))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
              max_iter=max(250, int(max_iter))).fit_transform(e)
    fig = Figure(figsize=(6, 5.5))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for k, name in enumerate(classes):
        m = y == k
        if m.any():
            ax.scatter(xy[m, 0], xy[m, 1], s=6, alpha=0.7, label=f"{name} ({int(m.sum())})", color=cmap(k % cmap.N))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=2, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    ax.set_title(title or f"t-SNE of embeddings ({e.shape[0]} points)")
    return save_figure(fig, path)


def curve_columns(df: Any) -> tuple[list[str], list[str]]:
    """``(loss columns, accuracy columns)`` of a metrics table.

    Losses: numeric columns with ``loss`` in the name, except 0/1 flags such as the engine's ``loss_reweighted``
    (whether DRW was on). Accuracies: numeric columns with ``accuracy`` in the name or ending in ``_acc``
    (the engine's ``train_acc``)."""
    import pandas as pd

    def numeric(c: str) -> bool:
        return pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])

    def flag(c: str) -> bool:
        v = df[c].dropna()
        return pd.api.types.is_bool_dtype(df[c]) or (len(v) > 0 and set(v.unique().tolist()) <= {0, 1}
                                                     and pd.api.types.is_integer_dtype(df[c]))

    loss = [c for c in df.columns if "loss" in c.lower() and numeric(c) and not flag(c)]
    acc = [c for c in df.columns if ("accuracy" in c.lower() or c.lower().endswith("_acc")) and numeric(c)]
    return loss, acc


def plot_training_curves(metrics: Any, path: str | os.PathLike, title: str | None = None) -> Path:
    """Training curves from a ``metrics.csv`` (path or DataFrame) with an ``epoch`` column: every
    ``*loss*`` column on the left panel, every ``*accuracy*`` column (accuracy, balanced accuracy,
    train/val) on the right."""
    import pandas as pd

    src = str(metrics) if not isinstance(metrics, pd.DataFrame) else "metrics table"
    if isinstance(metrics, pd.DataFrame):
        df = metrics
    else:
        p = Path(metrics)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: metrics.csv not found")
        try:
            df = pd.read_csv(p)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise ValueError(f"{p}: not a readable CSV ({e})") from None
    if "epoch" not in df.columns:
        raise ValueError(f"{src}: expected an 'epoch' column, found {list(df.columns)}")
    if df.empty:
        raise ValueError(f"{src}: has no rows")
    loss_cols, acc_cols = curve_columns(df)
    if not loss_cols and not acc_cols:
        raise ValueError(f"{src}: no '*loss*' or '*accuracy*' columns to plot (columns: {list(df.columns)})")
    # one row per epoch (a log may hold several rows per epoch after resume; keep the last)
    df = df.groupby("epoch", as_index=False).last().sort_values("epoch")
    fig = Figure(figsize=(10, 3.8))
    for i, (cols, ylabel) in enumerate(((loss_cols, "loss"), (acc_cols, "accuracy (%)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for c in cols:
            v = df[c].astype(float) * (100 if ylabel.startswith("accuracy") else 1)
            ax.plot(df["epoch"], v, marker="." if len(df) < 50 else None, label=c)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if cols:  # legends below each panel, where they cover no curve
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
        else:
            ax.text(0.5, 0.5, f"no {ylabel.split()[0]} columns", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title or "Training curves")
    return save_figure(fig, path)
