"""The head-level trainer: label noise by hand, the DRW and DIFC switches at their epochs, determinism, and
heads that learn (and class weights that move recall towards a minority class)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fairexpr.config import ConfigError
from fairexpr.engine.embed import Embeddings
from fairexpr.engine.head_level import HEAD_RECIPES, HeadConfig, run_cell, symmetric_noise, train_head

CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")


def blobs(counts, seed=0, sep=3.0, dim=16):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (len(counts), dim))
    centers *= sep / np.linalg.norm(centers, axis=1, keepdims=True)
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    x = centers[y] + rng.normal(0, 1, (len(y), dim))
    return Embeddings(x.astype(np.float32), y, CLASSES)


def test_symmetric_noise_by_hand():
    y = np.arange(20) % 4
    z = symmetric_noise(y, 0.25, 4, seed=3)
    changed = np.flatnonzero(z != y)
    assert len(changed) == 5  # exactly round(0.25 * 20), each to a different class
    assert ((z >= 0) & (z < 4)).all()
    np.testing.assert_array_equal(symmetric_noise(y, 0.25, 4, seed=3), z)
    assert not np.array_equal(symmetric_noise(y, 0.25, 4, seed=4), z)
    np.testing.assert_array_equal(symmetric_noise(y, 0.0, 4, seed=3), y)


@pytest.mark.parametrize("recipe", list(HEAD_RECIPES))
def test_every_recipe_learns_separable_blobs_and_is_deterministic(recipe):
    train, test = blobs([200] * 7, seed=0, sep=6.0), blobs([50] * 7, seed=0, sep=6.0)
    cfg = HeadConfig(recipe=recipe, epochs=8, seed=1)
    a = run_cell(train, {"t": test}, cfg, target=test)
    b = run_cell(train, {"t": test}, cfg, target=test)
    assert a["metrics"]["t"]["balanced_accuracy"] > 0.9
    assert a["metrics"] == b["metrics"] and a["log"]["epoch_loss"] == b["log"]["epoch_loss"]


def test_drw_switches_on_at_its_epoch_and_difc_margins_follow_the_target_order():
    from fairexpr.losses.difc import difc_margins, feature_confusion

    train, target = blobs([400, 40, 200, 400, 200, 100, 300], seed=2), blobs([60] * 7, seed=5)
    model, log = train_head(train, HeadConfig(recipe="difc", epochs=6, drw_epoch=2, difc_epoch=4, seed=0), target)
    assert log["drw_epoch"] == 2 and log["difc_epoch"] == 4 and len(log["difc_orders"]) == 2  # epochs 4 and 5
    # the last order is the feature-confusion order of the head's predictions before the last epoch: recompute the
    # margins it implies from the LDAM base margins and compare to DIFC's formula
    from fairexpr.losses.ldam import margins_from_counts

    base = margins_from_counts(log["class_counts"], 0.5)
    order = [CLASSES.index(c) for c in log["difc_orders"][-1]]
    m = np.asarray(difc_margins(base, order, 0.02), np.float32)
    np.testing.assert_allclose(log["final_margins"], m, atol=1e-7)  # the loss trained with exactly these margins
    inc = m - np.asarray(base, np.float32)
    assert inc[order[0]] == pytest.approx(0.02) and inc[order[1]] == pytest.approx(0.01)  # ε / 2^(j-1)
    _, order_now = feature_confusion(model.predict_proba(target.features))
    assert sorted(order_now) == list(range(7))


def test_class_weights_raise_the_minority_recall():
    counts = [600, 30, 600, 600, 600, 600, 600]
    train, test = blobs(counts, seed=3, sep=2.0), blobs([100] * 7, seed=3, sep=2.0)
    rec = {r: run_cell(train, {"t": test}, HeadConfig(recipe=r, epochs=10, seed=0))["metrics"]["t"]["per_class_accuracy"]["disgust"]
           for r in ("ce", "weighted_ce")}
    assert rec["weighted_ce"] > rec["ce"] + 0.1


def test_bad_configs_are_one_clear_error():
    e = blobs([20] * 7)
    with pytest.raises(ConfigError, match="head recipe 'nope' unknown"):
        train_head(e, HeadConfig(recipe="nope"))
    with pytest.raises(ConfigError, match="needs the target embeddings"):
        train_head(e, HeadConfig(recipe="difc"))
    with pytest.raises(ConfigError, match="noise: must be in"):
        train_head(e, HeadConfig(noise=1.0))
    with pytest.raises(ConfigError, match="epochs: must be a positive int"):
        train_head(e, HeadConfig(epochs=0))
    missing = Embeddings(e.features[:40], np.zeros(40, np.int64), CLASSES)
    with pytest.raises(ConfigError, match="lack classes"):
        train_head(missing, HeadConfig())
    with pytest.raises(ConfigError, match="features"):
        train_head(e, HeadConfig(recipe="difc"), Embeddings(np.zeros((3, 5), np.float32), np.zeros(3, np.int64), CLASSES))
    other = Embeddings(e.features, e.labels % 2, ("a", "b"))
    with pytest.raises(ConfigError, match="have classes"):
        run_cell(e, {"o": other}, HeadConfig(epochs=1))
    assert torch.get_default_dtype() == torch.float32


def test_reliability_recipes_build_the_grefel_head_and_loss():
    train = blobs([40] * 7, seed=0, sep=6.0)
    none, _ = train_head(train, HeadConfig(recipe="rb_none", epochs=1, seed=0))
    assert none.head.anchors() is None and none.head.rb.attention is None  # without RB: L_final = l
    full, _ = train_head(train, HeadConfig(recipe="rb", epochs=1, seed=0))
    assert full.head.anchors().shape == (7, 10, 16) and full.head.rb.attention is not None
    out = full(torch.zeros(3, 16))
    assert out.shape == (3, 7) and torch.allclose(out.exp().sum(1), torch.ones(3), atol=1e-5)  # log L_final
    # the loss weights reach training: the anchor-spread term moves the anchors, so L_cls + L_a ends elsewhere
    cls, _ = train_head(train, HeadConfig(recipe="rb_cls", epochs=2, seed=0))
    cls_a, _ = train_head(train, HeadConfig(recipe="rb_cls_a", epochs=2, seed=0))
    assert not torch.allclose(cls.head.anchors(), cls_a.head.anchors())
    assert HEAD_RECIPES["rb"]["lambdas"] == (1.0, 1.0, 0.01)  # configs/grefel_dlib_cpu.yaml's weights
