"""Rule 2 of the benchmark protocol (``docs/benchmarks.md``): has a cell's baseline converged?

A run meets rule 2 when its validation curve has turned before the schedule ends: its best epoch by validation
balanced accuracy is not its last one. Where the last epoch *is* the best, how far it is ahead of the best earlier
epoch says whether a longer schedule had much left to give (a 0.2-point lead on a flat tail is not a 5-point one), so
every benchmark records that lead per run, from the run's ``result.json`` history, instead of leaving it to be read by
hand from ``metrics.csv``.

* :func:`best_val_epoch` — the 1-based epoch of the highest validation balanced accuracy (ties: the earlier epoch);
* :func:`last_epoch_lead` — the last epoch's value minus the best earlier epoch's, in points (negative: the curve has
  turned, by that much);
* :func:`tail_slope` — the least-squares slope of the curve's tail (its last third, at least 4 epochs), in points
  per epoch with a 95 % t interval: a tail whose interval lies above 0 is *still rising*, whichever epoch was best
  (a lead alone cannot tell a last-epoch best on a flat tail from one on a climb);
* :func:`rule2_fields` — these, plus the epochs logged, as the record fields every benchmark stores;
* :func:`epochs_cell` / :func:`rule2_verdict` — the text the tables print per seed and per cell.

The metric is fixed (``val_balanced_accuracy``, every recipe's selection metric); a run scored at its last epoch
(``train.select_metric=last``) is judged by the same curve, so the verdict says whether the source side was still
improving, not which model was evaluated.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from .stats import t_quantile

__all__ = ["RULE2_KEY", "TAIL_MIN_EPOCHS", "best_val_epoch", "epochs_cell", "last_epoch_lead", "rule2_fields",
           "rule2_verdict", "tail_slope", "val_curve"]

#: the validation column of ``metrics.csv`` / ``result.json["history"]`` that rule 2 reads
RULE2_KEY = "val_balanced_accuracy"
#: the fewest epochs a tail is fitted over (the last third of the curve when that is longer)
TAIL_MIN_EPOCHS = 4


def _validated(history: Sequence[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    """``(epoch, value)`` for the validated epochs, in epoch order; an epoch logged twice (a resume can re-log it)
    counts once, with its last value."""
    last = {int(h["epoch"]): float(h[key]) for h in history if h.get(key) not in (None, "")}
    return sorted(last.items())


def val_curve(history: Sequence[dict[str, Any]] | None, key: str = RULE2_KEY) -> list[tuple[int, float]]:
    """``(epoch, value)`` of every validated epoch of a run's history, in epoch order (a re-logged epoch once)."""
    return _validated(list(history or []), key)


def best_val_epoch(history: Sequence[dict[str, Any]], key: str = RULE2_KEY) -> int | None:
    """1-based epoch of the highest validation value in a run's history (ties: the earlier epoch; ``None`` when the
    run logged no validation)."""
    vals = _validated(history, key)
    return max(vals, key=lambda v: (v[1], -v[0]))[0] if vals else None


def last_epoch_lead(history: Sequence[dict[str, Any]], key: str = RULE2_KEY) -> float | None:
    """The last validated epoch's value minus the best value of the epochs before it, in points (× 100).

    Positive: the last epoch is the best, ahead by that much (rule 2 not met for this run); zero or negative: an
    earlier epoch is at least as good. ``None`` with fewer than two validated epochs (nothing to compare)."""
    vals = _validated(history, key)
    if len(vals) < 2:
        return None
    return (vals[-1][1] - max(v for _, v in vals[:-1])) * 100.0


def tail_slope(history: Sequence[dict[str, Any]], key: str = RULE2_KEY,
               min_epochs: int = TAIL_MIN_EPOCHS) -> dict[str, float | int] | None:
    """Ordinary least-squares slope of the last ``k`` validated epochs, ``k = max(min_epochs, ceil(n / 3))`` (all
    ``n`` when fewer), in points per epoch, with its 95 % Student-t interval (``k - 2`` degrees of freedom):
    ``{"epochs": k, "slope", "lo", "hi"}``. ``None`` with fewer than 3 validated epochs (no interval).

    The x values are the logged epoch numbers (a resumed run's skipped row leaves a gap, not a shift; an epoch
    logged twice, as a resume can, counts once, with its last value)."""
    if min_epochs < 3:
        raise ValueError(f"tail_slope: min_epochs must be >= 3 (an interval needs 3 points), got {min_epochs}")
    vals = _validated(history, key)
    n = len(vals)
    if n < 3:
        return None
    k = min(n, max(min_epochs, math.ceil(n / 3)))
    xs = [float(e) for e, _ in vals[-k:]]
    ys = [v * 100.0 for _, v in vals[-k:]]
    mx, my = sum(xs) / k, sum(ys) / k
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    resid = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys))
    half = t_quantile(0.975, k - 2) * math.sqrt(resid / (k - 2) / sxx)
    return {"epochs": k, "slope": slope, "lo": slope - half, "hi": slope + half}


def rule2_fields(history: Sequence[dict[str, Any]] | None, key: str = RULE2_KEY) -> dict[str, Any]:
    """The per-run record fields: ``rule2_epochs`` (last epoch logged), ``rule2_best_epoch``, ``rule2_last_lead``
    (points, see :func:`last_epoch_lead`) and the tail fit of :func:`tail_slope` as ``rule2_tail_epochs``,
    ``rule2_tail_slope``, ``rule2_tail_lo``, ``rule2_tail_hi`` (points per epoch); ``None`` values when the history
    is missing or has too little validation."""
    history = list(history or [])
    last = max((int(h["epoch"]) for h in history), default=None)
    tail = tail_slope(history, key) or {}
    return {"rule2_epochs": last, "rule2_best_epoch": best_val_epoch(history, key),
            "rule2_last_lead": last_epoch_lead(history, key),
            "rule2_tail_epochs": tail.get("epochs"), "rule2_tail_slope": tail.get("slope"),
            "rule2_tail_lo": tail.get("lo"), "rule2_tail_hi": tail.get("hi")}


def _rising(runs: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """(runs whose tail slope's interval lies above 0, runs whose records have a tail fit)."""
    fitted = [r for r in runs if r.get("rule2_tail_lo") is not None]
    return sum(1 for r in fitted if float(r["rule2_tail_lo"]) > 0), len(fitted)


def epochs_cell(epochs_run: Any, kept: Any, lead: float | None = None) -> str:
    """``"12 (10)"``: epochs run and the epoch kept; ``"18 (18, last +0.20)"`` when the kept epoch is the last and
    the lead over the best earlier epoch is known; ``–`` for what is unknown."""
    if epochs_run is None:
        return "–"
    k = "–" if kept is None else str(kept)
    if kept is not None and int(kept) == int(epochs_run) and lead is not None:
        return f"{epochs_run} ({k}, last {lead:+.2f})"
    return f"{epochs_run} ({k})"


def rule2_verdict(runs: Sequence[dict[str, Any]]) -> str:
    """One cell's rule-2 verdict over its runs (one per seed), each a record with :func:`rule2_fields`.

    ``met`` when no run's best validation epoch is its last; ``not met (k of n; last epoch ahead by ≤ x.xx points)``
    otherwise (the largest lead of those k runs; the lead is left out where a record predates it). Where the records
    have a tail fit (:func:`tail_slope`), a not-met verdict adds ``; tail still rising on j of n`` (``j`` runs whose
    tail slope's interval lies above 0: a longer schedule may still gain there; ``0 of n``: no tail's rise can be
    told from its noise; ``of m with a tail fit`` where only ``m`` records have one), and so does a met verdict when
    ``j > 0``. ``no validation`` when no run logged any (``(k of n runs)`` when only some did); ``–`` when a record
    has no rule-2 fields at all (made before they existed, or without a ``result.json``): unknown, not "no
    validation"."""
    n = len(runs)
    if n == 0:
        raise ValueError("rule2_verdict: no runs given")
    if any("rule2_best_epoch" not in r or "rule2_epochs" not in r for r in runs):
        return "–"
    missing = [r for r in runs if r.get("rule2_best_epoch") is None]
    if missing:
        return "no validation" + ("" if len(missing) == n else f" ({len(missing)} of {n} runs)")
    last = [r for r in runs if int(r["rule2_best_epoch"]) == int(r["rule2_epochs"])]
    rising, fitted = _rising(runs)
    note = ""
    if fitted:
        note = f"; tail still rising on {rising} of {fitted}" + ("" if fitted == n else " with a tail fit")
    if not last:
        return "met" + (note if rising else "")
    leads = [r.get("rule2_last_lead") for r in last]
    lead = f"; last epoch ahead by ≤ {max(leads):.2f} points" if all(v is not None for v in leads) else ""
    return f"not met ({len(last)} of {n}{lead}){note}"
