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


# six subjects; class 0 has images of subjects 0-3, class 1 of subjects 4-5 (subject 5: one image only)
YG = np.array([0] * 12 + [1] * 5 + [-1] * 2)
GG = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 4, 5, 9, 9])


def test_images_per_group_fills_class_slots_with_whole_groups():
    s = ClassBalancedSampler(YG, seed=0, images_per_class=4, groups=GG, images_per_group=2, num_samples=80)
    assert s.batch_size == 8 and len(s) == 80
    batches = np.array(list(s)).reshape(-1, 8)
    seen0 = set()
    for b in batches:
        assert np.bincount(YG[b], minlength=2).tolist() == [4, 4]
        for k in (0, 1):
            g = GG[b[YG[b] == k]]
            counts = np.bincount(g)
            assert np.all(counts % 2 == 0), (k, g)  # every group contributes N_pg = 2 images (or 4 when drawn twice)
        g0 = GG[b[YG[b] == 0]]
        assert len(set(g0.tolist())) == 2  # class 0 has 4 groups: two distinct ones per batch
        seen0 |= set(g0.tolist())
    assert seen0 == {0, 1, 2, 3}  # the group cycle visits every subject of the class
    # subject 5 has one image: its pair repeats it; subject 4 pairs are two different images until exhausted
    flat = np.array(list(ClassBalancedSampler(YG, seed=0, images_per_class=4, groups=GG, images_per_group=2, num_samples=80)))
    assert np.array_equal(flat, batches.reshape(-1))  # reproducible from the seed
    assert not np.array_equal(flat, np.array(list(ClassBalancedSampler(YG, seed=1, images_per_class=4, groups=GG,
                                                                       images_per_group=2, num_samples=80))))


def test_images_per_group_hand_checked_pairs():
    # one class, two subjects of two images each, B = N_pg = 2: every batch is one subject's two images
    y, g = np.array([0, 0, 0, 0]), np.array([7, 7, 8, 8])
    s = ClassBalancedSampler(y, seed=3, images_per_class=2, groups=g, images_per_group=2, num_samples=8)
    for b in np.array(list(s)).reshape(-1, 2):
        assert sorted(b.tolist()) in ([0, 1], [2, 3])


def test_images_per_group_errors():
    with pytest.raises(DataError, match="multiple"):
        ClassBalancedSampler(YG, images_per_class=3, groups=GG, images_per_group=2)
    with pytest.raises(DataError, match="needs images_per_class"):
        ClassBalancedSampler(YG, groups=GG, images_per_group=2)
    with pytest.raises(DataError, match="group id per sample"):
        ClassBalancedSampler(YG, images_per_class=2, images_per_group=2)
    bad = GG.copy()
    bad[0] = -1
    with pytest.raises(DataError, match="no group id"):
        ClassBalancedSampler(YG, images_per_class=2, groups=bad, images_per_group=2)
    with pytest.raises(DataError, match="ids for"):
        ClassBalancedSampler(YG, images_per_class=2, groups=GG[:-1], images_per_group=2)


def test_images_per_group_resume_is_exact():
    def make():
        return ClassBalancedSampler(YG, seed=5, images_per_class=4, groups=GG, images_per_group=2, num_samples=40)
    ref = make()
    full = list(ref) + list(ref)
    a = make()
    first = list(itertools.islice(iter(a), 11))
    b = make()
    b.load_state_dict(a.state_dict())
    assert first + (list(b) + list(b))[: len(full) - 11] == full
