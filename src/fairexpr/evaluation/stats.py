"""Paired comparisons across seeds: the statistic every benchmark claim is judged by.

For two cells run with the same seeds, ``d_s = b_s - a_s`` is the per-seed difference; the claim "b > a" is
*reproduced* only when the 95 % confidence interval of the mean difference (Student's t with n - 1 degrees of
freedom: ``mean(d) ± t_{0.975, n-1} · sd(d) / sqrt(n)``) excludes zero.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (scipy's when installed; its exact closed forms for 1 and 2 degrees of freedom)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    try:
        from scipy.stats import t

        return float(t.ppf(p, df))
    except ImportError:  # pragma: no cover - scipy is a dependency of the evaluation extras
        if df == 1:
            return math.tan(math.pi * (p - 0.5))
        if df == 2:
            a = 4 * p * (1 - p)
            return (2 * p - 1) * math.sqrt(2 / a)
        raise


def paired_difference(a: Mapping[Any, float] | Sequence[float], b: Mapping[Any, float] | Sequence[float],
                      confidence: float = 0.95) -> dict[str, Any]:
    """Mean, sd and ``confidence`` interval of ``b - a`` over the seeds both have.

    ``a``/``b`` are ``{seed: value}`` (paired by seed; seeds only one side has are listed in ``unpaired``) or
    equal-length sequences (paired by position). ``verdict`` is ``"b > a"``, ``"b < a"`` or ``"no difference
    shown"``; with one pair the interval is undefined (``None``) and the verdict is ``"one seed: no interval"``."""
    if isinstance(a, Mapping) != isinstance(b, Mapping):
        raise TypeError("give both sides as {seed: value} mappings or both as sequences")
    if isinstance(a, Mapping):
        seeds = sorted(set(a) & set(b))
        unpaired = sorted(set(a) ^ set(b))
        d = [float(b[s]) - float(a[s]) for s in seeds]
    else:
        if len(a) != len(b):
            raise ValueError(f"paired sequences must have equal length, got {len(a)} and {len(b)}")
        seeds, unpaired = list(range(len(a))), []
        d = [float(y) - float(x) for x, y in zip(a, b)]
    n = len(d)
    if n == 0:
        raise ValueError("no seed is shared by the two cells")
    mean = sum(d) / n
    out: dict[str, Any] = {"n": n, "seeds": seeds, "unpaired": unpaired, "differences": d, "mean": mean,
                           "confidence": confidence}
    if n == 1:
        return out | {"sd": None, "ci": None, "verdict": "one seed: no interval"}
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    lo, hi = mean - half, mean + half
    verdict = "b > a" if lo > 0 else "b < a" if hi < 0 else "no difference shown"
    return out | {"sd": sd, "ci": [lo, hi], "verdict": verdict}


def fisher_one_sided(hits_a: int, n_a: int, hits_b: int, n_b: int) -> float:
    """One-sided Fisher exact test that group A's rate of an event is higher than group B's: the probability, with
    both margins fixed, that A holds ``hits_a`` or more of the ``hits_a + hits_b`` events, i.e. the upper tail of the
    hypergeometric law ``P(X = k) = C(n_a, k) C(n_b, K - k) / C(n_a + n_b, K)``. Used for counts of collapsed runs,
    where a paired interval of the metric mixes two failure modes into one spread."""
    for name, v in (("hits_a", hits_a), ("n_a", n_a), ("hits_b", hits_b), ("n_b", n_b)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    if hits_a > n_a or hits_b > n_b:
        raise ValueError(f"events exceed runs: {hits_a}/{n_a} and {hits_b}/{n_b}")
    if n_a == 0 or n_b == 0:
        raise ValueError(f"each group needs at least one run, got n_a={n_a}, n_b={n_b}")
    total, k_all = n_a + n_b, hits_a + hits_b
    tail = sum(math.comb(n_a, k) * math.comb(n_b, k_all - k) for k in range(hits_a, min(n_a, k_all) + 1))
    return tail / math.comb(total, k_all)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval of a binomial proportion ``k / n``: the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` quantiles of ``Beta(k, n - k + 1)`` and ``Beta(k + 1, n - k)``, with 0 / 1 at the ends
    (``k = 0``: upper bound ``1 - (α/2)^(1/n)``; ``k = n``: lower bound ``(α/2)^(1/n)``)."""
    for name, v in (("k", k), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    if n == 0 or k > n:
        raise ValueError(f"expected 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    from scipy.stats import beta

    a = 1.0 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def claim_verdict(d: Mapping[str, Any], want: str) -> str:
    """A claim's verdict from a :func:`paired_difference` result; ``want`` is its claimed direction (``"b > a"`` or
    ``"b < a"``): ``**reproduced**`` (the interval excludes 0 that way), ``opposite shown`` (the other way),
    ``not shown``, or the one-seed verdict when there is no interval."""
    if want not in ("b > a", "b < a"):
        raise ValueError(f"claimed direction must be 'b > a' or 'b < a', got {want!r}")
    if d["ci"] is None:
        return d["verdict"]
    if d["verdict"] == want:
        return "**reproduced**"
    return "not shown" if d["verdict"] == "no difference shown" else "opposite shown"


def format_difference(r: Mapping[str, Any], scale: float = 100.0, digits: int = 2) -> str:
    """``+1.23 [+0.40, +2.06] (n=3)`` in points (``scale`` 100 for fractions)."""
    m = f"{r['mean'] * scale:+.{digits}f}"
    if r["ci"] is None:
        return f"{m} (n={r['n']}, no interval)"
    lo, hi = (v * scale for v in r["ci"])
    return f"{m} [{lo:+.{digits}f}, {hi:+.{digits}f}] (n={r['n']})"
