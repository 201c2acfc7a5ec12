"""Built-in procedural faces (:mod:`fairexpr.data.synthetic`) addressed as ``synthetic:PROFILE``.

``PROFILE`` is ``fer2013``, ``rafdb`` or ``balanced`` (per-class train counts, see
:data:`fairexpr.data.synthetic.PROFILES`). Options may be passed as keyword arguments to
:func:`fairexpr.data.scan` or inline in the address as a query string, which is how the CLI sets them::

    synthetic:fer2013?n=3000&domain=wild&size=48&seed=1

Options: ``n`` or its alias ``total`` (train images in total, default 2000) or ``scale`` (times the
profile's reference counts), ``size`` (48), ``channels`` (1 or 3), ``seed`` (0), ``domain``
(``default``, ``lab``, ``wild``), ``test_fraction`` (0.2: ``val`` and ``test`` each hold ``round(test_fraction * n)`` images, balanced over
the profile's classes), ``num_classes`` (7, or 8 to add contempt where the profile has it).

Splits: ``train`` (imbalanced as the profile), ``val`` and ``test`` (balanced). The three splits use
different seed keys, so they never share an image. Samples carry their pixels inline
(``Sample.pixels``) and a path ``synthetic://PROFILE/SPLIT/INDEX``.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np

from ...labels import CANONICAL7, CANONICAL8
from ..base import BadFilePolicy, DataError, Sample, ScanResult, register_adapter
from ..synthetic import DOMAINS, PROFILES, generate, profile_counts
from ._common import check_split

FMT = "synthetic"
SPLITS = ("train", "val", "test")
OPTIONS = ("n", "total", "scale", "size", "channels", "seed", "domain", "test_fraction", "num_classes")
DEFAULT_N = 2000


def _num(options: dict[str, Any], key: str, cast: type, default: Any) -> Any:
    v = options.get(key, default)
    if v is None:
        return None
    try:
        return cast(v)
    except (TypeError, ValueError):
        raise DataError(f"{FMT}: option {key} must be a {cast.__name__}, got {v!r}") from None


def parse_address(root: Path | str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split ``PROFILE?key=value&...`` and merge with keyword ``options`` (keywords win)."""
    text = str(root)
    profile, _, query = text.partition("?")
    merged: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False)) if query else {}
    merged.update(options)
    unknown = sorted(set(merged) - set(OPTIONS))
    if unknown:
        raise DataError(f"{FMT}: unknown option(s) {', '.join(unknown)} in {text!r}; expected {', '.join(OPTIONS)}")
    profile = profile.strip().strip("/").lower() or "balanced"
    if profile not in PROFILES:
        raise DataError(f"{FMT}: unknown profile {profile!r}; expected one of {', '.join(sorted(PROFILES))} "
                        f"(address synthetic:PROFILE[?n=2000&domain=wild])")
    return profile, merged


@lru_cache(maxsize=16)
def _split_arrays(profile: str, split: str, counts: tuple[int, ...], size: int, channels: int, seed: int, domain: str,
                  classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    imgs, labels = generate(list(counts), size=size, channels=channels, seed=seed, domain=domain, classes=classes,
                            split=f"{profile}/{split}")
    imgs.setflags(write=False)
    labels.setflags(write=False)
    return imgs, labels


@register_adapter(FMT, "built-in procedural faces synthetic:PROFILE[?n=..&domain=..] (fer2013, rafdb, balanced)",
                  virtual=True)
def scan_synthetic(root: Path, split: str | None = None, *, on_bad_file: BadFilePolicy = "error",
                   **options: Any) -> ScanResult:
    """Generated faces (see module docstring); ``on_bad_file`` is accepted for uniformity (nothing can be bad)."""
    profile, opts = parse_address(root, options)
    wanted = check_split(FMT, split, SPLITS)
    if "n" in opts and "total" in opts:
        raise DataError(f"{FMT}: options n and total are the same thing; give one")
    n = _num(opts, "n", int, None) if "n" in opts else _num(opts, "total", int, None)
    scale = _num(opts, "scale", float, None)
    if n is None and scale is None:
        n = DEFAULT_N
    size = _num(opts, "size", int, 48)
    channels = _num(opts, "channels", int, 1)
    seed = _num(opts, "seed", int, 0)
    frac = _num(opts, "test_fraction", float, 0.2)
    if not 0.0 < frac <= 1.0:
        raise DataError(f"{FMT}: option test_fraction must be in (0, 1], got {frac}")
    domain = str(opts.get("domain", "default")).strip().lower()
    if domain not in DOMAINS:
        raise DataError(f"{FMT}: unknown domain {domain!r}; expected one of {', '.join(sorted(DOMAINS))}")
    k = _num(opts, "num_classes", int, 7)
    if k not in (7, 8):
        raise DataError(f"{FMT}: option num_classes must be 7 or 8, got {k}")
    classes = CANONICAL7 if k == 7 else CANONICAL8

    train_counts = profile_counts(profile, classes=classes, total=n, scale=scale)
    present = train_counts > 0
    n_eval = max(int(present.sum()), int(round(frac * int(train_counts.sum()))))
    eval_counts = np.zeros(len(classes), np.int64)
    eval_counts[present] = profile_counts([1] * int(present.sum()), classes=tuple(np.array(classes)[present]),
                                          total=n_eval)
    samples: list[Sample] = []
    for sp in wanted:
        counts = train_counts if sp == "train" else eval_counts
        imgs, labels = _split_arrays(profile, sp, tuple(int(c) for c in counts), size, channels, seed, domain, classes)
        meta = {"domain": domain, "seed": seed, "profile": profile}
        samples.extend(Sample(path=f"synthetic://{profile}/{sp}/{i}", label=int(y), split=sp, pixels=imgs[i],
                              meta=meta) for i, y in enumerate(labels.tolist()))
    return ScanResult(samples=samples, classes=classes, splits=SPLITS)
