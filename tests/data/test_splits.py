"""Holdout, subject k-fold, few-label fractions, label noise, label-space alignment, split strings."""
from __future__ import annotations

import numpy as np
import pytest

from fairexpr.data import DataError, FERDataset, Sample
from fairexpr.data.splits import (ASYMMETRIC_PAIRS, SplitSpec, align_datasets, align_label_spaces, inject_label_noise,
                                  label_fraction, load_split, resolve_split, select, stratified_holdout, subject_kfold)
from fairexpr.labels import CANONICAL7, CANONICAL8

from .conftest import write_image


def test_stratified_holdout_per_class_counts_and_determinism():
    y = np.array([0] * 50 + [1] * 20 + [2] * 3 + [3] * 1)
    tr, va = stratified_holdout(y, 0.1, seed=3)
    assert np.bincount(y[va], minlength=4).tolist() == [5, 2, 1, 0]  # round(.3)=0 -> clipped to 1; N=1 -> 0
    assert np.intersect1d(tr, va).size == 0 and np.union1d(tr, va).tolist() == list(range(y.size))
    tr2, va2 = stratified_holdout(y, 0.1, seed=3)
    assert np.array_equal(va, va2) and not np.array_equal(va, stratified_holdout(y, 0.1, seed=4)[1])
    with pytest.raises(DataError):
        stratified_holdout(y, 1.0)


def _ck_like(n_subjects=23, seed=0):
    rng = np.random.default_rng(seed)
    samples = []
    for s in range(n_subjects):
        for q in range(rng.integers(1, 4)):
            for f in range(3):
                samples.append(Sample(path=f"S{s:03d}_{q:03d}_{f}.png", label=int(rng.integers(0, 7)), split="all",
                                      subject=f"S{s:03d}", sequence=f"S{s:03d}_{q:03d}"))
    return samples


def test_subject_kfold_groups_and_balance():
    samples = _ck_like()
    folds = subject_kfold(samples, k=5, seed=1)
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(len(samples)))  # partition
    for tr, te in folds:
        assert {samples[i].subject for i in tr}.isdisjoint({samples[i].subject for i in te})
        assert {samples[i].sequence for i in tr}.isdisjoint({samples[i].sequence for i in te})
    sizes = [te.size for _, te in folds]
    assert max(sizes) - min(sizes) <= 9  # within one subject (at most 3 sequences x 3 frames)
    assert [te.tolist() for _, te in folds] == [te.tolist() for _, te in subject_kfold(samples, 5, seed=1)]
    with pytest.raises(DataError, match="k"):
        subject_kfold(samples, k=100)


def test_label_fraction_per_class_nested_reproducible():
    y = np.array([0] * 200 + [1] * 30 + [2] * 4 + [-1] * 10)
    i10 = label_fraction(y, 0.10, seed=7)
    assert np.bincount(y[i10], minlength=3).tolist() == [20, 3, 1]  # min_per_class=1 for class 2
    i5 = label_fraction(y, 0.05, seed=7)
    assert np.bincount(y[i5], minlength=3).tolist() == [10, 2, 1]
    assert set(i5) <= set(i10)  # nested subsets
    assert np.array_equal(i10, label_fraction(y, 0.10, seed=7))
    assert not np.array_equal(i10, label_fraction(y, 0.10, seed=8))
    assert label_fraction(y, 1.0).size == 234 and (y[label_fraction(y, 1.0)] >= 0).all()


def test_symmetric_noise_exact_rate():
    y = np.repeat(np.arange(7), 100)
    noisy, flipped = inject_label_noise(y, 0.2, "symmetric", seed=0, num_classes=7)
    assert flipped.sum() == 140 and (noisy[flipped] != y[flipped]).all() and (noisy[~flipped] == y[~flipped]).all()
    assert np.bincount(y[flipped]).tolist() == [20] * 7
    assert set(noisy[flipped].tolist()) == set(range(7))
    assert np.array_equal(noisy, inject_label_noise(y, 0.2, "symmetric", seed=0, num_classes=7)[0])


def test_asymmetric_noise_pairs():
    y = np.repeat(np.arange(8), 10)
    noisy, flipped = inject_label_noise(y, 0.3, "asymmetric", seed=1, num_classes=8)
    for k, name in enumerate(CANONICAL8):
        fl = flipped & (y == k)
        if name == "happiness":
            assert fl.sum() == 0
        else:
            assert fl.sum() == 3 and (noisy[fl] == CANONICAL8.index(ASYMMETRIC_PAIRS[name])).all()
    assert ASYMMETRIC_PAIRS["fear"] == "surprise" and ASYMMETRIC_PAIRS["anger"] == "disgust"
    with pytest.raises(DataError):
        inject_label_noise(y, 1.5)


def test_align_label_spaces_contempt():
    al = align_label_spaces(CANONICAL7, CANONICAL8)
    assert al.classes == CANONICAL7 and al.dropped_target == ("contempt",) and al.dropped_source == ()
    keep, new = al.apply([0, 7, 3, -1, 7], "target")
    assert keep.tolist() == [0, 2, 3] and new.tolist() == [0, 3, -1]
    with pytest.raises(DataError, match="contempt"):
        align_label_spaces(CANONICAL8, CANONICAL7, policy="error")
    src = FERDataset([Sample("a", 3, "train")], CANONICAL7)
    tgt = FERDataset([Sample("b", 7, "all"), Sample("c", 1, "all", soft_label=(0, .5, 0, 0, 0, 0, .25, .25))],
                     CANONICAL8)
    s2, t2, rep = align_datasets(src, tgt)
    assert t2.classes == CANONICAL7 and len(t2) == 1 and rep["target"]["dropped_samples"] == 1
    np.testing.assert_allclose(t2.samples[0].soft_label, [0, 2 / 3, 0, 0, 0, 0, 1 / 3])


def test_resolve_split_grammar():
    assert resolve_split("train") == SplitSpec("train")
    assert resolve_split("all") == SplitSpec(None) == resolve_split(None)
    assert resolve_split("fold3of10/rest") == SplitSpec(None, (("fold", (3, 10)), ("rest", None)))
    assert resolve_split("train/rest0.1/frac0.05") == SplitSpec("train", (("rest", 0.1), ("frac", 0.05)))
    for bad in ("fold0of10", "fold11of10", "train/rest", "train/bogus", "train/test"):
        with pytest.raises(DataError):
            resolve_split(bad)


def test_select_complements():
    samples = _ck_like()
    a = select(samples, resolve_split("fold2of5"), seed=1)
    b = select(samples, resolve_split("fold2of5/rest"), seed=1)
    assert np.intersect1d(a, b).size == 0 and a.size + b.size == len(samples)
    v = select(samples, resolve_split("val0.2"), seed=4)
    r = select(samples, resolve_split("rest0.2"), seed=4)
    assert sorted(np.concatenate([v, r]).tolist()) == list(range(len(samples)))


def test_load_split_on_fixture(tmp_path):
    for i, cls in enumerate(["anger", "happy", "sadness"] * 4):
        write_image(tmp_path / f"ck/{cls}/S{i:03d}_001_0000000{i % 3}.png")
    spec = f"ckplus:{tmp_path / 'ck'}"
    te = load_split(spec, "fold1of4", seed=0)
    tr = load_split(spec, "fold1of4/rest", seed=0)
    assert len(te) == 3 and len(tr) == 9 and te.name.endswith("[fold1of4]")
    assert {s.subject for s in te.samples}.isdisjoint({s.subject for s in tr.samples})
