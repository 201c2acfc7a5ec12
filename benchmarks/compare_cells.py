"""Compare two runs of one cell number by number: a cell retrained from its committed command against the archived
(or original) one. Compared are every column of ``metrics.csv`` except the timing ones, epoch by epoch, and every
number in each ``eval/<role>/metrics.json`` the two share. The script prints, per column and per role, the largest
absolute difference, plus the first epoch where the runs part.

    python benchmarks/compare_cells.py benchmarks/results/cells/<tag>/<cell> /tmp/rerun/<cell>   # exit 0: identical

Exit status: 0 if every number agrees to ``--tol``, 1 if some differ (or epochs / roles are missing on one side), 2 on
bad input (one line naming the folder or file).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

#: metrics.csv columns that measure the machine, not the run
TIMING = frozenset({"train_images_per_s", "train_time_s", "elapsed_s"})


def _read_csv(f: Path) -> list[dict[str, str]]:
    if not f.is_file():
        raise ValueError(f"{f}: not found (expected a cell folder holding metrics.csv)")
    with open(f, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "epoch" not in rows[0]:
        raise ValueError(f"{f}: expected a header with an 'epoch' column and one row per epoch")
    return rows


def _num(v: str) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _leaves(d: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a JSON tree, keyed by its path (``per_class.anger.recall``); strings and nulls are skipped."""
    out: dict[str, float] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out |= _leaves(v, f"{prefix}{k}.")
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out |= _leaves(v, f"{prefix}{i}.")
    elif isinstance(d, (int, float)) and not isinstance(d, bool):
        out[prefix.rstrip(".")] = float(d)
    return out


def _diff(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return 0.0 if a is b else math.inf
    if math.isnan(a) and math.isnan(b):
        return 0.0
    return abs(a - b)


def compare(a: Path, b: Path, tol: float = 1e-9) -> dict[str, Any]:
    """The comparison of cell folders ``a`` and ``b``: ``columns`` (largest difference per metrics.csv column),
    ``first`` (epoch, column, difference) of the first difference above ``tol`` or None, ``epochs`` (count on each
    side), ``roles`` (largest difference per shared eval role), ``only`` (roles or columns one side lacks),
    ``compared`` (numbers compared) and ``identical``."""
    ra, rb = _read_csv(Path(a) / "metrics.csv"), _read_csv(Path(b) / "metrics.csv")
    cols = [c for c in ra[0] if c not in TIMING]
    only = [f"column {c} (only in {a})" for c in cols if c not in rb[0]]
    only += [f"column {c} (only in {b})" for c in rb[0] if c not in TIMING and c not in ra[0]]
    cols = [c for c in cols if c in rb[0]]
    worst = {c: 0.0 for c in cols}
    first, n = None, 0
    for x, y in zip(ra, rb):
        for c in cols:
            d = _diff(_num(x[c]), _num(y[c]))
            n += 1
            worst[c] = max(worst[c], d)
            if d > tol and first is None:
                first = (x["epoch"], c, d)
    roles: dict[str, float] = {}
    ea = {p.parent.name: p for p in Path(a).glob("eval/*/metrics.json")}
    eb = {p.parent.name: p for p in Path(b).glob("eval/*/metrics.json")}
    only += [f"eval role {r} (only in {a})" for r in sorted(set(ea) - set(eb))]
    only += [f"eval role {r} (only in {b})" for r in sorted(set(eb) - set(ea))]
    for r in sorted(set(ea) & set(eb)):
        try:
            la, lb = _leaves(json.loads(ea[r].read_text())), _leaves(json.loads(eb[r].read_text()))
        except json.JSONDecodeError as e:
            raise ValueError(f"{ea[r]} or {eb[r]}: not valid JSON ({e})") from None
        keys = sorted(set(la) | set(lb))
        n += len(keys)
        roles[r] = max((_diff(la.get(k), lb.get(k)) for k in keys), default=0.0)
    epochs = (len(ra), len(rb))
    identical = (first is None and not only and epochs[0] == epochs[1] and all(v <= tol for v in roles.values()))
    return {"columns": worst, "first": first, "epochs": epochs, "roles": roles, "only": only, "compared": n,
            "identical": identical}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="a cell folder (e.g. the archived one)")
    ap.add_argument("b", type=Path, help="the other run of the same cell")
    ap.add_argument("--tol", type=float, default=1e-9, help="largest absolute difference counted as equal")
    args = ap.parse_args(argv)
    for d in (args.a, args.b):
        if not d.is_dir():
            ap.error(f"{d}: not a folder (expected a cell folder holding metrics.csv)")
    if args.a.name != args.b.name:
        print(f"note: the folder names differ ({args.a.name} vs {args.b.name}): a different name is a different "
              f"config hash, so these may not be the same cell")
    try:
        r = compare(args.a, args.b, args.tol)
    except ValueError as e:
        ap.error(str(e))
    print(f"epochs: {r['epochs'][0]} vs {r['epochs'][1]}; {r['compared']} numbers compared (tolerance {args.tol:g})")
    for c, d in r["columns"].items():
        print(f"  metrics.csv {c}: largest difference {d:.3g}")
    for role, d in r["roles"].items():
        print(f"  eval/{role}/metrics.json: largest difference {d:.3g}")
    for o in r["only"]:
        print(f"  missing on one side: {o}")
    if r["first"]:
        print(f"first difference: epoch {r['first'][0]}, {r['first'][1]} ({r['first'][2]:.3g})")
    print("identical" if r["identical"] else "DIFFERENT")
    return 0 if r["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
