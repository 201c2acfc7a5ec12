"""Pair two runs files cell by cell and seed by seed: what did one change between two grids (a longer schedule, a
fresh checkout, another machine) do to each cell? For every cell present in both files, B − A per seed with the
mean, the 95 % Student-t interval and a verdict (docs/benchmarks.md rule 3), for each metric asked for.

    python benchmarks/pair_runs.py benchmarks/results/grefel_dlib_datainit_clean_e18_s40-49_runs.json \\
        benchmarks/results/grefel_dlib_datainit_clean_e24_s40-49_runs.json --by dataset rb label_noise

Reads the ``<tag>_runs.json`` files the grefel, face2exp and difc harnesses write (``{"meta": {...}, "runs": [...]}``,
one record per run with its ``seed``; a metric is read from the record or from its ``metrics`` dict) and cucn.py's
``<tag>.json`` (``datasets.<dataset>.rows.<row>.<seed>``, the metrics in ``test``; cells keyed by dataset and row). A cell is the
set of values of the ``--by`` fields (default: every field that holds a string, a boolean or null in every record of
both files, except ``run``, the folder, whose name changes with the configuration hash, and ``stopped_by``). The settings the two files'
``meta`` records differ in (e.g. ``budget.epochs: 18 -> 24``) head the table, so it says what was compared. Cells and
seeds that only one file has are listed, not dropped. This describes a change; it is a test only where the change
was planned as one.

Exit status: 0 on success, 2 on bad input (one line naming the file and the field).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fairexpr._io import atomic_write_text  # noqa: E402
from fairexpr.evaluation.stats import format_difference, paired_difference  # noqa: E402

#: record fields that are outcomes of a run, not settings of its cell (``run``: the folder, named by config hash)
NOT_CELL = frozenset({"run", "stopped_by"})
#: meta fields that always differ between two grids and say nothing about their settings
META_IGNORED = frozenset({"command", "date", "wall_minutes", "archive", "tag", "results", "out"})
VERDICT = {"b > a": "B > A shown", "b < a": "B < A shown", "no difference shown": "not shown",
           "one seed: no interval": "one seed: no interval"}


def load_runs(path: Path) -> tuple[dict, list[dict]]:
    """``(meta, runs)`` of a runs file; ValueError with one line naming the file on anything else."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: not found (expected a <tag>_runs.json file)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable as JSON ({e})") from None
    if isinstance(data, dict) and "runs" not in data and isinstance(data.get("datasets"), dict):
        data = {"meta": data.get("meta"), "runs": _cucn_records(path, data["datasets"])}
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ValueError(f"{path}: expected an object with a 'runs' list (a <tag>_runs.json file) or cucn.py's "
                         "'datasets' tree")
    runs = data["runs"]
    if not runs:
        raise ValueError(f"{path}: 'runs' is empty")
    for i, r in enumerate(runs):
        if not isinstance(r, dict):
            raise ValueError(f"{path}: runs[{i}] is not an object")
        s = r.get("seed")
        if isinstance(s, bool) or not isinstance(s, int):
            raise ValueError(f"{path}: runs[{i}].seed must be an integer, got {s!r}")
    meta = data.get("meta")
    return (meta if isinstance(meta, dict) else {}), runs


def _cucn_records(path: Path, datasets: dict) -> list[dict]:
    """cucn.py's ``<tag>.json`` (``datasets.<dataset>.rows.<row>.<seed>``) as one record per run, with ``dataset``,
    ``row`` and ``seed`` fields."""
    out = []
    for ds, d in datasets.items():
        rows = d.get("rows") if isinstance(d, dict) else None
        if not isinstance(rows, dict):
            raise ValueError(f"{path}: datasets.{ds}.rows must be an object of rows")
        for row, seeds in rows.items():
            if not isinstance(seeds, dict):
                raise ValueError(f"{path}: datasets.{ds}.rows.{row} must be an object keyed by seed")
            for seed, rec in seeds.items():
                if not seed.lstrip("-").isdigit() or not isinstance(rec, dict):
                    raise ValueError(f"{path}: datasets.{ds}.rows.{row}.{seed}: expected a seed number and a run record")
                out.append({"dataset": ds, "row": row, "seed": int(seed), **rec})
    return out


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out |= _flat(v, f"{prefix}{k}.")
        return out
    if isinstance(d, list) and any(isinstance(x, dict) for x in d):  # e.g. budget.settings.0.epochs; plain lists whole
        out = {}
        for i, x in enumerate(d):
            out |= _flat(x, f"{prefix}{i}.")
        return out
    return {prefix.rstrip("."): d}


def meta_changes(a: dict, b: dict) -> list[str]:
    """``key: A -> B`` for every (flattened) meta setting the two files differ in, ignored fields aside."""
    fa, fb = _flat(a), _flat(b)
    keys = [k for k in dict.fromkeys([*fa, *fb]) if k.split(".")[0] not in META_IGNORED]

    def show(f: dict, k: str) -> str:
        return repr(f[k]) if k in f else "(absent)"

    return [f"{k}: {show(fa, k)} -> {show(fb, k)}" for k in keys if k not in fa or k not in fb or fa[k] != fb[k]]


def default_by(*run_lists: list[dict]) -> list[str]:
    """The fields that hold a string, a boolean or null in every record of every list (``NOT_CELL`` aside)."""
    recs = [r for runs in run_lists for r in runs]
    keys = [k for k in recs[0] if k not in NOT_CELL]
    return [k for k in keys if all(k in r and (r[k] is None or isinstance(r[k], (str, bool))) for r in recs)]


def metric(r: dict, name: str) -> float | None:
    v = r.get(name)
    for inner in ("metrics", "test"):  # difc.py keeps them in 'metrics', cucn.py in 'test'
        if v is None and isinstance(r.get(inner), dict):
            v = r[inner].get(name)
    return None if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) else float(v)


def cells(path: Path, runs: list[dict], by: list[str], metrics: list[str]) -> dict[tuple, dict[str, dict[int, float]]]:
    """``{cell: {metric: {seed: value}}}``; a record lacking a ``--by`` field or a metric, or a seed given twice in
    one cell, is an error naming the file and the record."""
    out: dict[tuple, dict[str, dict[int, float]]] = {}
    for i, r in enumerate(runs):
        miss = [k for k in by if k not in r]
        if miss:
            raise ValueError(f"{path}: runs[{i}] has no field {miss[0]!r} (--by names fields every record holds)")
        key = tuple(json.dumps(r[k], sort_keys=True) if isinstance(r[k], (dict, list)) else r[k] for k in by)
        c = out.setdefault(key, {m: {} for m in metrics})
        for m in metrics:
            v = metric(r, m)
            if v is None:
                raise ValueError(f"{path}: runs[{i}] (seed {r['seed']}) has no number {m!r}, at the top, in "
                                 "'metrics' or in 'test'")
            if r["seed"] in c[m]:
                raise ValueError(f"{path}: seed {r['seed']} appears twice in the cell "
                                 f"{dict(zip(by, key))} (give --by the field that tells them apart)")
            c[m][r["seed"]] = v
    return out


def pair_runs(a_path: Path, b_path: Path, by: list[str] | None = None,
              metrics: tuple[str, ...] = ("accuracy", "balanced_accuracy")) -> dict[str, Any]:
    """The paired comparison of runs files A and B (see the module docstring) as a JSON-able dict."""
    meta_a, runs_a = load_runs(a_path)
    meta_b, runs_b = load_runs(b_path)
    by = list(by) if by else default_by(runs_a, runs_b)
    metrics = list(metrics)
    ca, cb = cells(a_path, runs_a, by, metrics), cells(b_path, runs_b, by, metrics)
    rows: list[dict[str, Any]] = []
    for key in [k for k in ca if k in cb]:
        for m in metrics:
            a, b = ca[key][m], cb[key][m]
            row: dict[str, Any] = {"cell": dict(zip(by, key)), "metric": m,
                                   "only_a": sorted(set(a) - set(b)), "only_b": sorted(set(b) - set(a))}
            shared = sorted(set(a) & set(b))
            if not shared:
                row |= {"n": 0, "verdict": "no seed in common"}
            else:
                d = paired_difference(a, b)
                row |= {"n": d["n"], "mean_a": sum(a[s] for s in shared) / len(shared),
                        "mean_b": sum(b[s] for s in shared) / len(shared), "difference": d["mean"], "ci": d["ci"],
                        "per_seed": {str(s): x for s, x in zip(d["seeds"], d["differences"])},
                        "verdict": VERDICT[d["verdict"]], "text": format_difference(d)}
            rows.append(row)
    return {"a": str(a_path), "b": str(b_path), "by": by, "metrics": metrics,
            "changes": meta_changes(meta_a, meta_b), "rows": rows,
            "only_in_a": [dict(zip(by, k)) for k in ca if k not in cb],
            "only_in_b": [dict(zip(by, k)) for k in cb if k not in ca]}


def to_markdown(rep: dict[str, Any]) -> str:
    cells_ = [r["cell"] for r in rep["rows"]] + rep["only_in_a"] + rep["only_in_b"]
    common = {k: cells_[0][k] for k in rep["by"] if cells_ and all(c[k] == cells_[0][k] for c in cells_)}
    md = ["# Paired by seed: B − A per cell", "", f"- A: `{rep['a']}`", f"- B: `{rep['b']}`",
          f"- cells keyed by: {', '.join(rep['by']) or '(one cell)'}",
          "- the same in every cell: " + (", ".join(f"{k}={v}" for k, v in common.items()) or "–"),
          "- settings that differ (meta): " + ("; ".join(f"`{c}`" for c in rep["changes"]) or "none"), "",
          "Differences in points (metrics × 100), 95 % Student-t interval; a verdict says B > A or B < A only when "
          "the interval excludes 0.", "",
          "| cell | metric | A | B | B − A [95 % CI] | verdict | per seed (B − A) | seeds in one file only |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        cell = ", ".join(f"{k}={v}" for k, v in r["cell"].items() if k not in common) or "all"
        only = "; ".join(f"{side}: {', '.join(map(str, r[k]))}" for side, k in (("A", "only_a"), ("B", "only_b"))
                         if r[k]) or "–"
        if r["n"] == 0:
            md.append(f"| {cell} | {r['metric']} | – | – | – | {r['verdict']} | – | {only} |")
            continue
        seeds = ", ".join(f"s{s}: {x * 100:+.2f}" for s, x in r["per_seed"].items())
        md.append(f"| {cell} | {r['metric']} | {r['mean_a'] * 100:.2f} | {r['mean_b'] * 100:.2f} | {r['text']} "
                  f"| {r['verdict']} | {seeds} | {only} |")
    for side in ("a", "b"):
        for c in rep[f"only_in_{side}"]:
            md.append(f"\nCell only in {side.upper()} (not paired): "
                      + (", ".join(f"{k}={v}" for k, v in c.items() if k not in common) or "all"))
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path, help="runs file A (the reference)")
    ap.add_argument("b", type=Path, help="runs file B (the changed grid)")
    ap.add_argument("--by", nargs="+", help="record fields that name a cell (default: every string/boolean/null field)")
    ap.add_argument("--metrics", nargs="+", default=["accuracy", "balanced_accuracy"])
    ap.add_argument("--out", type=Path, help="also write OUT.md and OUT.json")
    a = ap.parse_args(argv)
    try:
        rep = pair_runs(a.a, a.b, a.by, tuple(a.metrics))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    md = to_markdown(rep)
    print(md, end="")
    if a.out:
        atomic_write_text(Path(f"{a.out}.md"), md)
        atomic_write_text(Path(f"{a.out}.json"), json.dumps(rep, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
