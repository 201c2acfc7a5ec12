"""Class frequencies (statistical, fixed seeds, tolerant bounds) and exact resume of the samplers."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from fairexpr.data import DataError
from fairexpr.data.samplers import ClassBalancedSampler, ClassPowerSampler, ShuffleSampler, SqrtSampler

Y = np.array([0] * 400 + [1] * 100 + [2] * 25 + [3] * 4 + [-1] * 7)


def test_shuffle_is_permutation_per_epoch():
    s = ShuffleSampler(50, seed=3)
    e0, e1 = list(s), list(s)
    assert sorted(e0) == list(range(50)) and sorted(e1) == list(range(50)) and e0 != e1
    assert len(list(ShuffleSampler(10, seed=0, num_samples=25))) == 25


def test_class_balanced_frequencies():
    s = ClassBalancedSampler(Y, seed=0, num_samples=8000)
    freq = np.bincount(Y[list(s)], minlength=4) / 8000
    # binomial std for p=.25, n=8000 is 0.0048; allow ~5 sigma
    assert np.all(np.abs(freq - 0.25) < 0.025), freq
    assert -1 not in set(Y[list(s)].tolist())


def test_sqrt_frequencies():
    s = SqrtSampler(Y, seed=1, num_samples=8000)
    freq = np.bincount(Y[list(s)], minlength=4) / 8000
    expect = np.sqrt([400, 100, 25, 4]) / np.sqrt([400, 100, 25, 4]).sum()  # [20,10,5,2]/37
    np.testing.assert_allclose(freq, expect, atol=0.025)


def test_within_class_cycle_covers_every_sample():
    s = ClassBalancedSampler(Y, seed=2, num_samples=4000)
    drawn = set(list(s))
    assert drawn == set(np.flatnonzero(Y >= 0).tolist())  # rare and frequent samples all visited


def test_images_per_class_batches():
    s = ClassBalancedSampler(Y, seed=0, images_per_class=3, num_samples=100)
    assert s.batch_size == 12 and len(s) == 96
    idx = np.array(list(s)).reshape(-1, 12)
    for b in idx:
        assert np.bincount(Y[b], minlength=4).tolist() == [3, 3, 3, 3]
    with pytest.raises(DataError):
        ClassPowerSampler(Y, 0.5, images_per_class=2)


@pytest.mark.parametrize("make", [lambda: ShuffleSampler(37, seed=5), lambda: ClassBalancedSampler(Y, seed=5),
                                  lambda: SqrtSampler(Y, seed=5),
                                  lambda: ClassBalancedSampler(Y, seed=5, images_per_class=2)])
def test_resume_is_exact(make):
    ref = make()
    full = list(ref) + list(ref)  # two epochs
    a = make()
    it = iter(a)
    first = list(itertools.islice(it, 17))
    state = a.state_dict()
    b = make()
    b.load_state_dict(state)
    rest = list(b) + list(b)
    assert first + rest[: len(full) - 17] == full
    assert b.state_dict()["epoch"] == 2


def test_works_with_dataloader():
    ds = torch.utils.data.TensorDataset(torch.arange(len(Y)))
    dl = torch.utils.data.DataLoader(ds, batch_size=10, sampler=ClassBalancedSampler(Y, seed=0, num_samples=40))
    assert sum(b[0].numel() for b in dl) == 40


def test_bad_inputs():
    with pytest.raises(DataError):
        ClassBalancedSampler([-1, -1])
    with pytest.raises(DataError):
        ShuffleSampler(0)
    s = ShuffleSampler(5)
    with pytest.raises(DataError):
        s.load_state_dict({"epoch": 0})
