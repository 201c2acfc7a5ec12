"""Few-label protocol (``data.label_fraction``): per-class counts, reproducibility, nesting, engine wiring."""
from __future__ import annotations

import numpy as np
import pytest

import f2e_helpers as H
from fairexpr.config import load_config
from fairexpr.data.splits import label_fraction
from fairexpr.engine.data import build_splits

LABELS = np.repeat(np.arange(7), [400, 40, 120, 900, 300, 250, 3])  # FER2013-like imbalance, one tiny class


@pytest.mark.parametrize("frac", [0.01, 0.05, 0.10, 0.25, 0.5, 1.0])
def test_per_class_counts(frac):
    idx = label_fraction(LABELS, frac, seed=0)
    got = np.bincount(LABELS[idx], minlength=7)
    want = [min(n, max(1, round(frac * n))) for n in np.bincount(LABELS)]
    assert got.tolist() == want
    assert len(np.unique(idx)) == len(idx)


def test_reproducible_nested_and_seeded():
    a, b = label_fraction(LABELS, 0.05, seed=3), label_fraction(LABELS, 0.05, seed=3)
    assert np.array_equal(a, b)
    assert set(label_fraction(LABELS, 0.01, seed=3)) <= set(label_fraction(LABELS, 0.10, seed=3))
    assert not np.array_equal(a, label_fraction(LABELS, 0.05, seed=4))


def test_unlabelled_samples_are_never_drawn():
    y = np.concatenate([LABELS, -np.ones(50, int)])
    assert (y[label_fraction(y, 0.5, seed=0)] >= 0).all()


def test_engine_applies_the_fraction_after_the_holdout():
    full = build_splits(load_config(None, H.engine_overrides(1) + ["data.val=holdout:0.2", "data.label_fraction=1.0"]),
                        progress=False)
    cfg = load_config(None, H.engine_overrides(1) + ["data.val=holdout:0.2", "data.label_fraction=0.1"])
    few = build_splits(cfg, progress=False)
    n_full = np.asarray(full["train"].class_counts())
    assert few["train"].class_counts() == [min(n, max(1, round(0.1 * n))) for n in n_full]
    assert len(few["val"]) == len(full["val"])  # the validation set is not reduced
    assert few["train"].info["label_fraction"] == 0.1
