"""Rule 2 helpers (fairexpr.evaluation.convergence): hand-computed best epochs, last-epoch leads and verdicts."""
import pytest

from fairexpr.evaluation.convergence import (val_curve, best_val_epoch, epochs_cell, last_epoch_lead, rule2_fields, rule2_verdict,
                                             tail_slope)


def _h(*vals, key="val_balanced_accuracy"):
    return [{"epoch": i + 1, key: v} for i, v in enumerate(vals)]


def test_best_val_epoch_ties_and_missing_validation():
    assert best_val_epoch(_h(0.60, 0.62, 0.62, 0.61)) == 2  # ties: the earlier epoch
    assert best_val_epoch([{"epoch": 1, "val_balanced_accuracy": ""}, {"epoch": 2}]) is None
    assert best_val_epoch(_h(0.5, 0.7, key="val_accuracy"), key="val_accuracy") == 2


def test_last_epoch_lead_by_hand():
    # GReFEL seed 13's tail (epochs 15-18 read 54.5, 55.2, 54.8, 55.4 %): 55.4 - 55.2 = +0.20 points
    assert last_epoch_lead(_h(0.50, 0.545, 0.552, 0.548, 0.554)) == pytest.approx(0.20)
    # turned: the last epoch 61 % is behind the best earlier 64 % by 3 points
    assert last_epoch_lead(_h(0.60, 0.64, 0.61)) == pytest.approx(-3.0)
    # a tie with an earlier epoch is a lead of 0 (and that earlier epoch is the best: rule 2 met)
    assert last_epoch_lead(_h(0.60, 0.62, 0.62)) == pytest.approx(0.0)
    # history out of order and with a skipped row (a resume): sorted by epoch number, epoch 4 is the last
    h = [{"epoch": 4, "val_balanced_accuracy": 0.65}, {"epoch": 1, "val_balanced_accuracy": 0.60},
         {"epoch": 2, "val_balanced_accuracy": 0.61}]
    assert last_epoch_lead(h) == pytest.approx(4.0)
    # the last epoch logged twice (a resume): its last value counts, compared with the epochs before it, not itself
    h = _h(0.60, 0.61) + [{"epoch": 2, "val_balanced_accuracy": 0.63}]
    assert last_epoch_lead(h) == pytest.approx(3.0) and best_val_epoch(h) == 2
    assert last_epoch_lead(_h(0.6)) is None and last_epoch_lead([]) is None
    assert last_epoch_lead([{"epoch": 1}, {"epoch": 2, "val_balanced_accuracy": ""}]) is None


_NO_TAIL = {"rule2_tail_epochs": None, "rule2_tail_slope": None, "rule2_tail_lo": None, "rule2_tail_hi": None}


def test_tail_slope_by_hand():
    # 60, 61, 60, 61 % over epochs 1-4: x̄ = 2.5, ȳ = 60.5, Sxy = 1.0, Sxx = 5 -> slope 0.2 points/epoch;
    # residuals -0.2, 0.6, -0.6, 0.2 -> SSE 0.8, s² = 0.4, se = sqrt(0.4 / 5) = 0.28284; t(0.975, 2) = 4.30265
    t = tail_slope(_h(0.60, 0.61, 0.60, 0.61))
    assert t["epochs"] == 4 and t["slope"] == pytest.approx(0.2)
    assert t["lo"] == pytest.approx(0.2 - 4.30265 * 0.28284, abs=1e-4)
    assert t["hi"] == pytest.approx(0.2 + 4.30265 * 0.28284, abs=1e-4)
    # a straight climb of 1 point per epoch: no residual, a zero-width interval above 0 (still rising)
    t = tail_slope(_h(0.40, 0.50, 0.51, 0.52, 0.53))
    assert (t["epochs"], t["slope"], t["lo"], t["hi"]) == (4, pytest.approx(1.0), pytest.approx(1.0), pytest.approx(1.0))
    # the tail is the last third, at least 4 epochs: 12 -> 4, 18 -> 6, 40 -> 14; 3 epochs -> all 3
    assert [tail_slope(_h(*[0.5 + 0.001 * (i % 3) for i in range(n)]))["epochs"] for n in (12, 18, 40, 3)] == [4, 6, 14, 3]
    # x is the logged epoch number: a resumed run's missing epoch 3 leaves a gap (epochs 2, 4, 5, 6 -> slope 1.0 here)
    h = [{"epoch": e, "val_balanced_accuracy": v} for e, v in [(1, 0.3), (2, 0.50), (4, 0.52), (5, 0.53), (6, 0.54)]]
    assert tail_slope(h)["slope"] == pytest.approx(1.0)
    # an epoch logged twice (a resume re-running it) counts once, with its last value: epoch 3 first logged 40 %,
    # then 52 % -> epochs 1-4 = 50, 51, 52, 53, a straight line (with both rows the fit would not be one)
    h = _h(0.50, 0.51, 0.40) + [{"epoch": 3, "val_balanced_accuracy": 0.52}, {"epoch": 4, "val_balanced_accuracy": 0.53}]
    assert tail_slope(h)["slope"] == pytest.approx(1.0) and tail_slope(h)["epochs"] == 4
    assert tail_slope(_h(0.5, 0.6)) is None and tail_slope([]) is None
    assert tail_slope(_h(0.5, 0.6) + [{"epoch": 2, "val_balanced_accuracy": 0.6}]) is None  # 2 distinct epochs
    with pytest.raises(ValueError, match="min_epochs"):
        tail_slope(_h(0.5, 0.6, 0.7), min_epochs=2)


def test_rule2_fields_and_missing_history():
    f = rule2_fields(_h(0.60, 0.64, 0.61))
    # the tail fit of 60, 64, 61: slope 0.5; SSE 8.1667, se = sqrt(8.1667 / 2) = 2.0207, t(0.975, 1) = 12.7062
    assert f == {"rule2_epochs": 3, "rule2_best_epoch": 2, "rule2_last_lead": pytest.approx(-3.0),
                 "rule2_tail_epochs": 3, "rule2_tail_slope": pytest.approx(0.5),
                 "rule2_tail_lo": pytest.approx(0.5 - 12.7062 * 2.0207, abs=1e-3),
                 "rule2_tail_hi": pytest.approx(0.5 + 12.7062 * 2.0207, abs=1e-3)}
    assert rule2_fields(None) == {"rule2_epochs": None, "rule2_best_epoch": None, "rule2_last_lead": None, **_NO_TAIL}
    assert rule2_fields([{"epoch": 1}, {"epoch": 2}]) == {"rule2_epochs": 2, "rule2_best_epoch": None,
                                                          "rule2_last_lead": None, **_NO_TAIL}


def test_rule2_verdict():
    met = rule2_fields(_h(0.60, 0.64, 0.61))
    last_small = rule2_fields(_h(0.60, 0.62, 0.622))   # +0.20
    last_big = rule2_fields(_h(0.50, 0.55, 0.60))      # +5.00
    assert rule2_verdict([met, met]) == "met"
    # last_big climbs 5 points an epoch with no residual (interval [5, 5], above 0): still rising; the others are not
    assert rule2_verdict([met, last_small, last_big]) == ("not met (2 of 3; last epoch ahead by ≤ 5.00 points); "
                                                          "tail still rising on 1 of 3")
    assert rule2_verdict([met, last_small]) == ("not met (1 of 2; last epoch ahead by ≤ 0.20 points); "
                                                "tail still rising on 0 of 2")
    # met by the letter, yet climbing: +1 point an epoch to 64 % at epoch 17, 63.95 at 18 keeps epoch 17, and the
    # 6-epoch tail 60, 61, 62, 63, 64, 63.95 has slope 0.85 with an interval above 0 (0.61 to 1.09)
    climbing = rule2_fields(_h(*[0.48 + 0.01 * i for i in range(17)], 0.6395))
    assert climbing["rule2_best_epoch"] == 17 and climbing["rule2_tail_slope"] == pytest.approx(0.85)
    assert climbing["rule2_tail_lo"] == pytest.approx(0.6096, abs=1e-3)
    assert rule2_verdict([met, climbing]) == "met; tail still rising on 1 of 2"
    # records from before the tail fit: the verdict stands without the note
    pre_tail = [{k: v for k, v in r.items() if not k.startswith("rule2_tail")} for r in (met, last_small)]
    assert rule2_verdict(pre_tail) == "not met (1 of 2; last epoch ahead by ≤ 0.20 points)"
    # a record from before the lead was stored: the count stands, the lead is not made up
    old = {"rule2_epochs": 12, "rule2_best_epoch": 12}
    assert rule2_verdict([met, old]) == "not met (1 of 2); tail still rising on 0 of 1 with a tail fit"
    assert rule2_verdict([old, old]) == "not met (2 of 2)"
    none = rule2_fields([{"epoch": 1}])
    assert rule2_verdict([none, none]) == "no validation"
    assert rule2_verdict([met, none]) == "no validation (1 of 2 runs)"
    # a record without the fields (a results file from before them, a run without result.json): unknown, said as such
    assert rule2_verdict([met, {"epochs_run": 12, "best_epoch": 12}]) == "–"
    with pytest.raises(ValueError, match="no runs"):
        rule2_verdict([])


def test_epochs_cell():
    assert epochs_cell(12, 10) == "12 (10)"
    assert epochs_cell(18, 18, 0.2) == "18 (18, last +0.20)"
    assert epochs_cell(18, 18) == "18 (18)"          # lead unknown: not invented
    assert epochs_cell(12, 10, 1.5) == "12 (10)"     # not the last epoch: no lead shown
    assert epochs_cell(None, None) == "–" and epochs_cell(5, None) == "5 (–)"


def test_val_curve_is_the_validated_epochs_in_order_with_a_relogged_epoch_once():
    h = [{"epoch": 2, "val_balanced_accuracy": 0.3}, {"epoch": 1, "val_balanced_accuracy": 0.2},
         {"epoch": 2, "val_balanced_accuracy": 0.35}, {"epoch": 3}, {"epoch": 4, "val_balanced_accuracy": ""}]
    assert val_curve(h) == [(1, 0.2), (2, 0.35)]  # a resume re-logged epoch 2: its last value counts
    assert val_curve(None) == [] and val_curve(h, "val_accuracy") == []
