"""Rule 2 helpers (fairexpr.evaluation.convergence): hand-computed best epochs, last-epoch leads and verdicts."""
import pytest

from fairexpr.evaluation.convergence import best_val_epoch, epochs_cell, last_epoch_lead, rule2_fields, rule2_verdict


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
    assert last_epoch_lead(_h(0.6)) is None and last_epoch_lead([]) is None
    assert last_epoch_lead([{"epoch": 1}, {"epoch": 2, "val_balanced_accuracy": ""}]) is None


def test_rule2_fields_and_missing_history():
    assert rule2_fields(_h(0.60, 0.64, 0.61)) == {"rule2_epochs": 3, "rule2_best_epoch": 2,
                                                  "rule2_last_lead": pytest.approx(-3.0)}
    assert rule2_fields(None) == {"rule2_epochs": None, "rule2_best_epoch": None, "rule2_last_lead": None}
    assert rule2_fields([{"epoch": 1}, {"epoch": 2}]) == {"rule2_epochs": 2, "rule2_best_epoch": None,
                                                          "rule2_last_lead": None}


def test_rule2_verdict():
    met = rule2_fields(_h(0.60, 0.64, 0.61))
    last_small = rule2_fields(_h(0.60, 0.62, 0.622))   # +0.20
    last_big = rule2_fields(_h(0.50, 0.55, 0.60))      # +5.00
    assert rule2_verdict([met, met]) == "met"
    assert rule2_verdict([met, last_small, last_big]) == "not met (2 of 3; last epoch ahead by ≤ 5.00 points)"
    # a record from before the lead was stored: the count stands, the lead is not made up
    old = {"rule2_epochs": 12, "rule2_best_epoch": 12}
    assert rule2_verdict([met, old]) == "not met (1 of 2)"
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
