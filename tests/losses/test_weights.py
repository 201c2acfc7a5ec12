"""Class-weight rules and the DRW schedule against hand-computed values (counts [100, 10, 1])."""
import numpy as np
import pytest
import torch

from fairexpr.config import ConfigError
from fairexpr.losses import DRWSchedule, class_weights

COUNTS = [100, 10, 1]


def test_inverse_frequency():
    # N = 111, K = 3: w = 111 / (3 n) = [0.37, 3.7, 37];  Σ w n = 37 + 37 + 37 = N
    w = class_weights("inverse", COUNTS)
    np.testing.assert_allclose(w.numpy(), [0.37, 3.7, 37.0], rtol=1e-6)
    assert float((w.double() * torch.tensor(COUNTS).double()).sum()) == pytest.approx(111.0)


def test_sqrt_inverse():
    # sqrt n = [10, 3.16227766, 1], c = 111 / 14.16227766 = 7.83772234; w = c / sqrt n
    w = class_weights("sqrt", COUNTS)
    np.testing.assert_allclose(w.numpy(), [0.78377223, 2.47850543, 7.83772234], rtol=1e-6)


def test_effective_number():
    # beta = 0.9: 1 - 0.9^n = [0.99997344, 0.65132156, 0.1]; raw w = 0.1 / that;
    # rescaled to sum K = 3 -> [0.23932924, 0.36744197, 2.39322879]
    w = class_weights("effective", COUNTS, beta=0.9)
    np.testing.assert_allclose(w.numpy(), [0.23932924, 0.36744197, 2.39322879], rtol=1e-6)
    assert float(w.sum()) == pytest.approx(3.0, abs=1e-6)
    # LDAM-DRW's beta = 0.9999
    np.testing.assert_allclose(class_weights("effective", COUNTS).numpy(), [0.02715872, 0.27036887, 2.7024724],
                               rtol=1e-5)
    # beta = 0 -> all ones (what LDAM-DRW uses before its DRW epoch)
    np.testing.assert_allclose(class_weights("effective", COUNTS, beta=0.0).numpy(), [1, 1, 1])


def test_manual_and_none():
    w = class_weights("manual", COUNTS, manual=[1.0, 2.5, 4.0])
    assert w.dtype == torch.float32 and w.tolist() == [1.0, 2.5, 4.0]
    assert class_weights("none", COUNTS) is None


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match="entries; expected one per class \\(3\\)"):
        class_weights("manual", COUNTS, manual=[1.0, 2.0])
    with pytest.raises(ConfigError, match="entry 1 \\(class 1\\)"):
        class_weights("manual", manual=[1.0, -2.0, 1.0])
    with pytest.raises(ConfigError, match="entry 0"):
        class_weights("manual", manual=[0.0, 1.0])
    with pytest.raises(ConfigError, match="manual="):
        class_weights("manual", COUNTS)
    with pytest.raises(ConfigError, match="class 2 has 0 training samples"):
        class_weights("inverse", [5, 3, 0])
    with pytest.raises(ConfigError, match="unknown rule 'balanced'"):
        class_weights("balanced", COUNTS)
    with pytest.raises(ConfigError, match="beta=1"):
        class_weights("effective", COUNTS, beta=1.0)
    with pytest.raises(ConfigError, match="class_counts is required"):
        class_weights("inverse")
    with pytest.raises(ConfigError, match="1-D"):
        class_weights("inverse", [[1, 2]])


def test_drw_schedule():
    drw = DRWSchedule(3, rule="effective", beta=0.9, class_counts=COUNTS)
    assert drw(0) is None and drw(2) is None  # unweighted before the (0-based) start epoch
    for epoch in (3, 10):
        np.testing.assert_allclose(drw(epoch).numpy(), [0.23932924, 0.36744197, 2.39322879], rtol=1e-6)
    # counts may be passed per call instead
    assert DRWSchedule(0, rule="inverse")(0, [1, 3]).tolist() == pytest.approx([2.0, 2 / 3])
    # DIFC authors' style: a hand-set vector from epoch 5
    hand = DRWSchedule(5, rule="manual", manual=[1.0, 2.0])
    assert hand(4) is None and hand(5).tolist() == [1.0, 2.0]


def test_drw_errors():
    with pytest.raises(ConfigError, match="start_epoch"):
        DRWSchedule(-1)
    with pytest.raises(ConfigError, match="never re-weight"):
        DRWSchedule(1, rule="none")
    with pytest.raises(ConfigError, match="class 1 has 0"):
        DRWSchedule(1, class_counts=[3, 0])
