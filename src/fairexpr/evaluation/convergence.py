"""Rule 2 of the benchmark protocol (``docs/benchmarks.md``): has a cell's baseline converged?

A run meets rule 2 when its validation curve has turned before the schedule ends: its best epoch by validation
balanced accuracy is not its last one. Where the last epoch *is* the best, how far it is ahead of the best earlier
epoch says whether a longer schedule had much left to give (a 0.2-point lead on a flat tail is not a 5-point one), so
every benchmark records that lead per run, from the run's ``result.json`` history, instead of leaving it to be read by
hand from ``metrics.csv``.

* :func:`best_val_epoch` — the 1-based epoch of the highest validation balanced accuracy (ties: the earlier epoch);
* :func:`last_epoch_lead` — the last epoch's value minus the best earlier epoch's, in points (negative: the curve has
  turned, by that much);
* :func:`rule2_fields` — both, plus the epochs logged, as the record fields every benchmark stores;
* :func:`epochs_cell` / :func:`rule2_verdict` — the text the tables print per seed and per cell.

The metric is fixed (``val_balanced_accuracy``, every recipe's selection metric); a run scored at its last epoch
(``train.select_metric=last``) is judged by the same curve, so the verdict says whether the source side was still
improving, not which model was evaluated.
"""
from __future__ import annotations

from typing import Any, Sequence

__all__ = ["RULE2_KEY", "best_val_epoch", "epochs_cell", "last_epoch_lead", "rule2_fields", "rule2_verdict"]

#: the validation column of ``metrics.csv`` / ``result.json["history"]`` that rule 2 reads
RULE2_KEY = "val_balanced_accuracy"


def _validated(history: Sequence[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    return [(int(h["epoch"]), float(h[key])) for h in history if h.get(key) not in (None, "")]


def best_val_epoch(history: Sequence[dict[str, Any]], key: str = RULE2_KEY) -> int | None:
    """1-based epoch of the highest validation value in a run's history (ties: the earlier epoch; ``None`` when the
    run logged no validation)."""
    vals = _validated(history, key)
    return max(vals, key=lambda v: (v[1], -v[0]))[0] if vals else None


def last_epoch_lead(history: Sequence[dict[str, Any]], key: str = RULE2_KEY) -> float | None:
    """The last validated epoch's value minus the best value of the epochs before it, in points (× 100).

    Positive: the last epoch is the best, ahead by that much (rule 2 not met for this run); zero or negative: an
    earlier epoch is at least as good. ``None`` with fewer than two validated epochs (nothing to compare)."""
    vals = sorted(_validated(history, key))
    if len(vals) < 2:
        return None
    return (vals[-1][1] - max(v for _, v in vals[:-1])) * 100.0


def rule2_fields(history: Sequence[dict[str, Any]] | None, key: str = RULE2_KEY) -> dict[str, Any]:
    """The per-run record fields: ``rule2_epochs`` (last epoch logged), ``rule2_best_epoch`` and ``rule2_last_lead``
    (points, see :func:`last_epoch_lead`); ``None`` values when the history is missing or has no validation."""
    history = list(history or [])
    last = max((int(h["epoch"]) for h in history), default=None)
    return {"rule2_epochs": last, "rule2_best_epoch": best_val_epoch(history, key),
            "rule2_last_lead": last_epoch_lead(history, key)}


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
    otherwise (the largest lead of those k runs; the lead is left out where a record predates it); ``no validation``
    when no run logged any (``(k of n runs)`` when only some did); ``–`` when a record has no rule-2 fields at all
    (made before they existed, or without a ``result.json``): unknown, not "no validation"."""
    n = len(runs)
    if n == 0:
        raise ValueError("rule2_verdict: no runs given")
    if any("rule2_best_epoch" not in r or "rule2_epochs" not in r for r in runs):
        return "–"
    missing = [r for r in runs if r.get("rule2_best_epoch") is None]
    if missing:
        return "no validation" + ("" if len(missing) == n else f" ({len(missing)} of {n} runs)")
    last = [r for r in runs if int(r["rule2_best_epoch"]) == int(r["rule2_epochs"])]
    if not last:
        return "met"
    leads = [r.get("rule2_last_lead") for r in last]
    tail = f"; last epoch ahead by ≤ {max(leads):.2f} points" if all(v is not None for v in leads) else ""
    return f"not met ({len(last)} of {n}{tail})"
