"""Paired per-seed differences and their t intervals, computed by hand."""
from __future__ import annotations

import math

import pytest

from fairexpr.evaluation.stats import clopper_pearson, format_difference, paired_difference, t_quantile


def test_t_quantiles_match_tables():
    assert t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-5)
    assert t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-5)
    assert t_quantile(0.975, 1) == pytest.approx(12.706205, abs=1e-5)


def test_paired_difference_by_hand():
    # d = [1, 2, 3] -> mean 2, sd 1, half-width 4.302653 / sqrt(3) = 2.484138
    r = paired_difference({0: 0.50, 1: 0.40, 2: 0.30}, {0: 1.50, 1: 2.40, 2: 3.30})
    assert r["differences"] == pytest.approx([1.0, 2.0, 3.0]) and r["mean"] == pytest.approx(2.0)
    assert r["sd"] == pytest.approx(1.0)
    assert r["ci"] == pytest.approx([2 - 2.484138, 2 + 2.484138], abs=1e-6)
    assert r["verdict"] == "no difference shown"  # the interval [-0.48, 4.48] contains 0
    r = paired_difference([0.1, 0.2, 0.3, 0.4, 0.5], [0.2, 0.31, 0.39, 0.52, 0.58])  # d = .1 .11 .09 .12 .08
    sd = math.sqrt(sum((x - 0.1) ** 2 for x in (0.1, 0.11, 0.09, 0.12, 0.08)) / 4)
    assert r["mean"] == pytest.approx(0.1) and r["sd"] == pytest.approx(sd)
    assert r["ci"][0] == pytest.approx(0.1 - 2.776445 * sd / math.sqrt(5), abs=1e-6) and r["verdict"] == "b > a"
    assert paired_difference([3, 3, 3], [1, 1.5, 1.2])["verdict"] == "b < a"  # d = -2 -1.5 -1.8: CI [-2.39, -1.14]


def test_pairs_by_seed_and_lists_the_unpaired():
    r = paired_difference({0: 1.0, 1: 2.0, 5: 9.0}, {1: 2.5, 0: 1.5, 7: 0.0})
    assert r["seeds"] == [0, 1] and r["unpaired"] == [5, 7] and r["differences"] == pytest.approx([0.5, 0.5])
    assert r["sd"] == 0.0 and r["ci"] == pytest.approx([0.5, 0.5]) and r["verdict"] == "b > a"


def test_one_seed_and_bad_input():
    r = paired_difference([0.5], [0.7])
    assert r["ci"] is None and r["verdict"] == "one seed: no interval"
    assert format_difference(r) == "+20.00 (n=1, no interval)"
    assert format_difference(paired_difference([0.0, 0.0], [0.01, 0.03])).startswith("+2.00 [")
    with pytest.raises(ValueError, match="equal length"):
        paired_difference([1, 2], [1])
    with pytest.raises(ValueError, match="no seed is shared"):
        paired_difference({0: 1.0}, {1: 1.0})
    with pytest.raises(TypeError, match="both"):
        paired_difference({0: 1.0}, [1.0])


def test_claim_verdict_follows_the_claimed_direction():
    from fairexpr.evaluation.stats import claim_verdict, paired_difference

    up = paired_difference([0.1, 0.2, 0.3], [0.2, 0.3, 0.4])  # +0.1 on every seed: interval [0.1, 0.1]
    assert claim_verdict(up, "b > a") == "**reproduced**" and claim_verdict(up, "b < a") == "opposite shown"
    assert claim_verdict(paired_difference([0.1, 0.2, 0.3], [0.2, 0.1, 0.3]), "b > a") == "not shown"
    assert claim_verdict(paired_difference([0.1], [0.2]), "b > a") == "one seed: no interval"
    with pytest.raises(ValueError, match="claimed direction"):
        claim_verdict(up, "up")


def test_fisher_one_sided_by_hand():
    from fairexpr.evaluation.stats import fisher_one_sided

    # 4 of 5 vs 0 of 5: all 4 events in A, C(5,4) C(5,0) / C(10,4) = 5 / 210
    assert fisher_one_sided(4, 5, 0, 5) == pytest.approx(5 / 210)
    assert fisher_one_sided(3, 5, 0, 5) == pytest.approx(10 / 120)  # C(5,3) / C(10,3)
    assert fisher_one_sided(4, 15, 0, 15) == pytest.approx(1365 / 27405)  # C(15,4) / C(30,4) = 0.0498
    # 1 of 5 vs 1 of 5: P(X >= 1) with K = 2 = (C(5,1) C(5,1) + C(5,2) C(5,0)) / C(10,2) = 35 / 45
    assert fisher_one_sided(1, 5, 1, 5) == pytest.approx(35 / 45)
    assert fisher_one_sided(0, 5, 0, 5) == 1.0 and fisher_one_sided(0, 3, 2, 3) == 1.0
    assert fisher_one_sided(2, 2, 0, 3) == pytest.approx(1 / 10)  # C(2,2) C(3,0) / C(5,2)


@pytest.mark.parametrize("args, match", [((3, 2, 0, 5), "exceed"), ((1, 0, 0, 0), "exceed"), ((0, 0, 0, 3), "at least one"),
                                         ((-1, 5, 0, 5), "hits_a"), ((1.5, 5, 0, 5), "hits_a"), ((True, 5, 0, 5), "hits_a")])
def test_fisher_one_sided_bad_counts(args, match):
    from fairexpr.evaluation.stats import fisher_one_sided

    with pytest.raises(ValueError, match=match):
        fisher_one_sided(*args)


def test_clopper_pearson_closed_forms_by_hand():
    # k = 0: upper bound 1 - (α/2)^(1/n); k = n: lower bound (α/2)^(1/n); α = 0.05, n = 10: 0.025^0.1 = 0.691503
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** 0.1))
    assert clopper_pearson(10, 10) == (pytest.approx(0.025 ** 0.1), 1.0)
    assert clopper_pearson(0, 10)[1] == pytest.approx(0.308497, abs=1e-6)
    # k = 1, n = 2: Beta(1, 2) has CDF 1 - (1 - x)^2, Beta(2, 1) has CDF x^2 -> 1 - √0.975 and √0.975
    lo, hi = clopper_pearson(1, 2)
    assert lo == pytest.approx(1 - math.sqrt(0.975)) and hi == pytest.approx(math.sqrt(0.975))
    # k = 1, n = 1 at 90 %: lower bound 0.05^(1/1)
    assert clopper_pearson(1, 1, confidence=0.9) == (pytest.approx(0.05), 1.0)


@pytest.mark.parametrize("args, msg", [((3, 2), "0 <= k <= n"), ((0, 0), "n >= 1"), ((-1, 4), "non-negative integer"),
                                       ((1.0, 4), "non-negative integer"), ((True, 4), "non-negative integer")])
def test_clopper_pearson_refuses_bad_counts(args, msg):
    with pytest.raises(ValueError, match=msg):
        clopper_pearson(*args)
    with pytest.raises(ValueError, match="confidence must be in"):
        clopper_pearson(1, 4, confidence=95)
