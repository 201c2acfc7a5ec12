"""Metrics: hand-computed examples and agreement with scikit-learn."""
import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from fairexpr.evaluation.metrics import (
    accuracy,
    balanced_accuracy,
    brier_score,
    cluster_quality,
    confusion_matrix,
    confusion_order,
    confusion_scores,
    evaluate,
    expected_calibration_error,
    macro_f1,
    nll,
    per_class_accuracy,
    per_class_summary,
    reliability_bins,
    soft_target_metrics,
)

CLASSES = ["a", "b", "c"]


def test_hand_computed_counts_and_per_class():
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 2, 2])
    cm, norm = confusion_matrix(y, p, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    np.testing.assert_allclose(norm, [[2 / 3, 1 / 3, 0], [0, 0.5, 0.5], [0, 0, 1]])
    acc, n = per_class_accuracy(y, p, 3)
    np.testing.assert_allclose(acc, [2 / 3, 0.5, 1.0])
    assert n.tolist() == [3, 2, 1]
    assert accuracy(y, p) == pytest.approx(4 / 6)
    assert balanced_accuracy(y, p, 3) == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    s = per_class_summary(acc)
    mean = (2 / 3 + 0.5 + 1) / 3
    pop_std = math.sqrt(((2 / 3 - mean) ** 2 + (0.5 - mean) ** 2 + (1 - mean) ** 2) / 3)
    assert s == pytest.approx({"std": pop_std, "min": 0.5, "max": 1.0, "gap": 0.5})
    # F1_a = 2*2/(4+0+1)=0.8, F1_b = 2/(2+1+1)=0.5, F1_c = 2/(2+1+0)=2/3
    mf1, f1 = macro_f1(y, p, 3)
    np.testing.assert_allclose(f1, [0.8, 0.5, 2 / 3])
    assert mf1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_absent_class_excluded_and_reported():
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 1, 1])
    acc, n = per_class_accuracy(y, pred, 3)
    assert np.isnan(acc[2]) and n[2] == 0
    assert balanced_accuracy(y, pred, 3) == pytest.approx((0.5 + 1.0) / 2)
    out = evaluate(y, None, CLASSES, y_pred=pred)
    assert out["absent_classes"] == ["c"] and out["present_classes"] == ["a", "b"]
    assert out["per_class_accuracy"]["c"] is None
    assert out["per_class_accuracy_min"] == 0.5 and out["per_class_accuracy_gap"] == 0.5
    assert out["ece"] is None and out["difc_confusion"] is None
    json.dumps(out, allow_nan=False)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    k, n = 7, 300
    y = rng.integers(0, k - 1, n)  # class 6 absent from y_true: exercises the absent-class rule
    probs = rng.dirichlet(np.ones(k) * 0.5, n)
    pred = probs.argmax(1)
    out = evaluate(y, probs, [f"c{i}" for i in range(k)])
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that y_pred has a class absent from y_true
        assert out["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert out["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert out["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=range(k)).tolist()
    assert out["nll"] == pytest.approx(skm.log_loss(y, probs, labels=range(k)))
    onehot = np.eye(k)[y]
    assert out["brier"] == pytest.approx(np.mean(np.sum((probs - onehot) ** 2, 1)))
    assert sum(out["n_per_class"].values()) == n
    assert sum(out["reliability"]["count"]) == n
    json.dumps(out, allow_nan=False)


def test_ece_hand_computed():
    # confidences 0.9 (correct), 0.9 (wrong), 0.6 (correct), 0.4 (3 classes; correct)
    probs = np.array([[0.9, 0.1, 0.0], [0.9, 0.05, 0.05], [0.6, 0.4, 0.0], [0.4, 0.3, 0.3]])
    y = np.array([0, 1, 0, 0])
    # bins of width 1/15: 0.9 -> bin 13 (0.8667, 0.9333]; 0.6 -> bin 8 (0.5333, 0.6]; 0.4 -> bin 5 (0.3333, 0.4]
    ece = (2 / 4) * abs(0.5 - 0.9) + (1 / 4) * abs(1 - 0.6) + (1 / 4) * abs(1 - 0.4)
    assert expected_calibration_error(probs, y) == pytest.approx(ece)
    rel = reliability_bins(probs, y)
    assert rel["count"][13] == 2 and rel["count"][8] == 1 and rel["count"][5] == 1 and rel["count"].sum() == 4
    assert rel["confidence"][13] == pytest.approx(0.9) and rel["accuracy"][13] == pytest.approx(0.5)
    assert np.isnan(rel["accuracy"][0])
    # exactly 1/15 falls in the first bin (right-closed bins)
    p = np.full((1, 15), 1 / 15)
    assert reliability_bins(p, [0])["count"][0] == 1
    # confidence 1.0 falls in the last bin
    assert reliability_bins(np.array([[1.0, 0.0]]), [0])["count"][-1] == 1


def test_nll_and_brier_hand_computed():
    probs = np.array([[0.5, 0.5], [0.2, 0.8]])
    y = np.array([0, 1])
    assert nll(probs, y) == pytest.approx(-(math.log(0.5) + math.log(0.8)) / 2)
    assert brier_score(probs, y) == pytest.approx(((0.25 + 0.25) + (0.04 + 0.04)) / 2)
    assert nll(np.array([[1.0, 0.0]]), [1]) == pytest.approx(-math.log(1e-12))


def test_difc_confusion_scores_hand_computed():
    probs = np.array([
        [0.7, 0.2, 0.1, 0.0],  # -> 0, gap 0.5
        [0.5, 0.4, 0.1, 0.0],  # -> 0, gap 0.1
        [0.1, 0.6, 0.3, 0.0],  # -> 1, gap 0.3
        [0.5, 0.5, 0.0, 0.0],  # argmax tie -> class 0 (lower index), gap 0
        [0.0, 0.0, 0.5, 0.5],  # argmax tie -> class 2, gap 0
    ])
    cs = confusion_scores(probs)
    assert cs["count"].tolist() == [3, 1, 1, 0]
    np.testing.assert_allclose(cs["gap"][:3], [0.6 / 3, 0.3, 0.0])
    assert cs["score"][0] == pytest.approx(5.0)
    assert cs["score"][1] == pytest.approx(1 / 0.3)
    assert np.isposinf(cs["score"][2])  # zero mean gap -> +inf
    assert np.isnan(cs["score"][3]) and np.isnan(cs["gap"][3])  # empty S_k -> undefined
    assert confusion_order(cs["score"]) == [2, 0, 1, 3]
    out = evaluate(np.array([0, 0, 1, 1, 2]), probs, ["a", "b", "c", "d"])
    d = out["difc_confusion"]
    assert d["order"] == ["c", "a", "b", "d"]
    assert d["score"]["c"] is None and d["score_is_inf"] == ["c"] and d["mean_top2_gap"]["c"] == 0.0
    assert d["score"]["d"] is None and d["mean_top2_gap"]["d"] is None and d["n_predicted"]["d"] == 0


def test_confusion_order_ties_and_groups():
    assert confusion_order([1.0, 2.0, 2.0, np.nan, np.inf, np.inf, 0.5]) == [4, 5, 1, 2, 0, 6, 3]
    assert confusion_order([np.nan, np.nan]) == [0, 1]


def test_cluster_quality_matches_sklearn_and_degenerate():
    rng = np.random.default_rng(0)
    e = np.concatenate([rng.normal(0, 1, (20, 3)), rng.normal(5, 1, (20, 3))])
    y = np.repeat([0, 1], 20)
    cq = cluster_quality(e, y)
    assert cq["davies_bouldin"] == pytest.approx(skm.davies_bouldin_score(e, y))
    assert cq["calinski_harabasz"] == pytest.approx(skm.calinski_harabasz_score(e, y))
    assert cluster_quality(e, np.zeros(40, int))["davies_bouldin"] is None
    out = evaluate(y, np.tile([0.6, 0.4], (40, 1)), ["a", "b"], embeddings=e)
    assert out["cluster"]["davies_bouldin"] == pytest.approx(cq["davies_bouldin"])


def test_soft_targets():
    probs = np.array([[0.5, 0.5], [0.9, 0.1]])
    q = np.array([[8, 2], [1, 1]])  # votes; normalised to [0.8, 0.2], [0.5, 0.5]
    s = soft_target_metrics(probs, q)
    ce = -(0.8 * math.log(0.5) + 0.2 * math.log(0.5) + 0.5 * math.log(0.9) + 0.5 * math.log(0.1)) / 2
    h = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2) + 2 * 0.5 * math.log(0.5)) / 2
    assert s["soft_cross_entropy"] == pytest.approx(ce)
    assert s["kl_divergence"] == pytest.approx(ce - h)
    assert s["soft_accuracy"] == pytest.approx((0.8 + 0.5) / 2)  # argmax 0 for both (tie -> 0)
    assert evaluate([0, 0], probs, ["a", "b"], soft_targets=q)["soft"]["soft_accuracy"] == pytest.approx(0.65)


@pytest.mark.parametrize("kwargs,match", [
    (dict(y_true=[0, 3], probs=np.eye(3)[[0, 1]]), r"\[0, 2\]"),
    (dict(y_true=[0, -1], probs=np.eye(3)[[0, 1]]), "unlabelled"),
    (dict(y_true=[0, 1], probs=np.eye(3)[[0, 1, 2]]), "N=2"),
    (dict(y_true=[0, 1], probs=np.eye(4)[[0, 1]]), "K=3"),
    (dict(y_true=[0, 1], probs=np.array([[2.0, -1.0, 0.0], [0, 1, 0]])), "softmax"),
    (dict(y_true=[0, 1], probs=np.array([[np.nan, 1, 0], [0, 1, 0]])), "NaN"),
    (dict(y_true=[], probs=np.zeros((0, 3))), "zero samples"),
    (dict(y_true=[0.5, 1], probs=np.eye(3)[[0, 1]]), "integer"),
    (dict(y_true=[0, 1], probs=None), "probs"),
])
def test_bad_input_raises_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate(kwargs["y_true"], kwargs["probs"], CLASSES)


def test_y_pred_must_agree_with_probs():
    with pytest.raises(ValueError, match="disagrees"):
        evaluate([0, 1], np.eye(3)[[0, 1]], CLASSES, y_pred=[1, 1])
