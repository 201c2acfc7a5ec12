"""MCD / DANN / SAFN with CE | DI | DIFC: which parameters each MCD step touches, DIFC phases and margins
(with a fake engine), extra_state for resume, DRW, option validation."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from difc_helpers import COUNTS, data_info, fake_ctx, make_config, sgd_builder, uda_batch
from fairexpr.config import ConfigError
from fairexpr.losses.difc import DIFCLoss, difc_margins
from fairexpr.losses.ldam import LDAMLoss, margins_from_counts
from fairexpr.methods.afn import SAFN
from fairexpr.methods.dann import DANN
from fairexpr.methods.mcd import MCD


def _snap(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {k for k, v in module.named_parameters() if not torch.equal(before[k], v.detach())}


def _mcd(**opts):
    torch.manual_seed(0)
    m = MCD(make_config("mcd", **opts), data_info())
    opts_ = m.configure_optimizers(sgd_builder(0.1))
    return m, fake_ctx(opts_)


BACKBONE_TRAINED = {"backbone.body.0.weight", "backbone.body.1.weight", "backbone.body.1.bias"}
HEADS = {f"c{j}.net.1.{w}" for j in (1, 2) for w in ("weight", "bias")}


def test_mcd_step_a_updates_backbone_and_both_classifiers():
    m, ctx = _mcd(cls_loss="ce")
    b = uda_batch()
    x = torch.cat([b["source"]["image"], b["target"]["image"]])
    before = _snap(m.model)
    m.step_a(x, b["source"]["label"], 6, ctx)
    assert _changed(before, m.model) == BACKBONE_TRAINED | HEADS


def test_mcd_step_b_updates_only_the_classifiers():
    m, ctx = _mcd(cls_loss="difc")
    b = uda_batch()
    x = torch.cat([b["source"]["image"], b["target"]["image"]])
    before = _snap(m.model)
    disc = m.step_b(x, b["source"]["label"], 6, ctx)
    assert _changed(before, m.model) == HEADS
    assert all(p.grad is None for p in m.model.backbone.parameters())
    assert disc.item() >= 0


def test_mcd_step_c_updates_only_the_backbone_num_k_times():
    m, ctx = _mcd(cls_loss="di", num_k=3)
    calls = []
    orig = ctx.step_optimizer
    ctx.step_optimizer = lambda o: (calls.append(o), orig(o))
    before = _snap(m.model)
    m.step_c(uda_batch()["target"]["image"], ctx)
    assert _changed(before, m.model) == BACKBONE_TRAINED
    assert len(calls) == 3 and all(o is ctx.optimizers[0] for o in calls)
    assert all(p.grad is None for n, p in m.model.named_parameters() if n.startswith("c"))
    assert all(p.requires_grad for p in m.model.parameters())  # the classifiers are unfrozen again


def test_mcd_step_b_increases_discrepancy():
    m, ctx = _mcd(cls_loss="ce", entropy_weight=0.0, dropout=0.0, trade_off=50.0)  # discrepancy term dominates
    m.eval()  # deterministic heads (no dropout, BN running stats) for the before/after comparison
    b = uda_batch()
    x = torch.cat([b["source"]["image"], b["target"]["image"]])

    def disc() -> float:
        with torch.no_grad():
            z1, z2 = m.model.forward_heads(m.model.forward_features(b["target"]["image"]))
            return (z1.softmax(-1) - z2.softmax(-1)).abs().mean().item()

    d0 = disc()
    for _ in range(5):
        m.step_b(x, b["source"]["label"], 6, ctx)
    assert disc() > d0


def test_mcd_training_step_and_predict_average():
    m, ctx = _mcd(cls_loss="difc", num_k=2)
    out = m.training_step(uda_batch(), ctx)
    assert set(out) == {"loss", "loss_cls", "discrepancy_b", "discrepancy_c"}
    assert all(torch.isfinite(v) for v in out.values())
    m.eval()
    x = torch.randn(5, 1, 16, 16)
    pred = m.predict(x)
    z1, z2 = m.model.forward_heads(m.model.forward_features(x))
    avg = 0.5 * (z1.softmax(-1) + z2.softmax(-1))
    assert torch.allclose(pred["probs"], avg, atol=1e-6)
    assert torch.allclose(pred["logits"], avg.log(), atol=1e-5)
    assert pred["embedding"].shape == (5, 8)


class FakeEngine:
    """Stands in for the engine's ``predict_dataset("target")`` (no labels)."""

    def __init__(self, probs: np.ndarray) -> None:
        self.probs = probs
        self.calls: list[str] = []

    def predict_dataset(self, name: str) -> dict[str, np.ndarray]:
        self.calls.append(name)
        return {"probs": self.probs, "embedding": np.zeros((len(self.probs), 8))}


def _target_probs() -> np.ndarray:
    # predicted classes 0..6 with gaps 0.6, 0.1, 0.3, 0.5, 0.05, 0.4, 0.2 -> order by decreasing 1/gap:
    gaps = [0.6, 0.1, 0.3, 0.5, 0.05, 0.4, 0.2]
    p = np.zeros((7, 7))
    for k, g in enumerate(gaps):
        second = (k + 1) % 7
        top = (1 + g) / 2
        p[k, k], p[k, second] = top, 1 - top
    return p


EXPECTED_ORDER = [4, 1, 6, 2, 5, 3, 0]


@pytest.mark.parametrize("cls", [MCD, DANN, SAFN])
def test_difc_phase_switch_at_t1_and_margins_in_extra_state(cls):
    name = {MCD: "mcd", DANN: "dann", SAFN: "safn"}[cls]
    m = cls(make_config(name, cls_loss="difc", t1_epochs=2, confusion_interval=2, epsilon=0.02), data_info())
    eng = FakeEngine(_target_probs())
    di = margins_from_counts(COUNTS, 0.3).numpy()
    for epoch in (0, 1):
        log = m.on_train_epoch_start(epoch, eng)
        assert log["difc_phase"] == 1 and m.phase == 1
        np.testing.assert_allclose(m.cls_loss.margins.numpy(), di, rtol=1e-6)
    assert eng.calls == []
    log = m.on_train_epoch_start(2, eng)
    assert eng.calls == ["target"] and m.phase == 2 and log["difc_updated"] == 1
    assert json.loads(log["difc_order"]) == EXPECTED_ORDER
    expected = difc_margins(di, EXPECTED_ORDER, 0.02)
    np.testing.assert_allclose(m.cls_loss.margins.numpy(), expected, rtol=1e-6)
    m.on_train_epoch_start(3, eng)  # interval 2: no recomputation at epoch 3
    assert eng.calls == ["target"]
    m.on_train_epoch_start(4, eng)
    assert eng.calls == ["target", "target"]

    state = m.extra_state()
    text = json.dumps(state, allow_nan=False)  # strictly JSON-serialisable
    assert state["phase"] == 2 and state["confusion_order"] == EXPECTED_ORDER
    # resume mid-phase: a fresh method restores phase and margins without re-predicting the target
    fresh = cls(make_config(name, cls_loss="difc", t1_epochs=2, confusion_interval=2), data_info())
    fresh.load_extra_state(json.loads(text))
    assert fresh.phase == 2 and fresh.confusion_order == EXPECTED_ORDER
    np.testing.assert_allclose(fresh.cls_loss.margins.numpy(), expected, rtol=1e-6)
    eng2 = FakeEngine(_target_probs())
    fresh.on_train_epoch_start(5, eng2)  # (5 - 2) % 2 != 0: keeps the restored margins
    assert eng2.calls == []
    np.testing.assert_allclose(fresh.cls_loss.margins.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("cls_loss, loss_type", [("ce", torch.nn.Module), ("di", LDAMLoss), ("difc", DIFCLoss)])
def test_cls_loss_choice_and_no_target_prediction_without_difc(cls_loss, loss_type):
    m = DANN(make_config("dann", cls_loss=cls_loss, t1_epochs=0), data_info())
    assert isinstance(m.cls_loss, loss_type)
    if cls_loss == "ce":
        assert not isinstance(m.cls_loss, LDAMLoss)
    eng = FakeEngine(_target_probs())
    m.on_train_epoch_start(0, eng)
    assert eng.calls == (["target"] if cls_loss == "difc" else [])


def test_drw_switches_weights_on_at_drw_epoch():
    m = SAFN(make_config("safn", cls_loss="di", drw_epoch=1, drw_beta=0.999), data_info())
    eng = FakeEngine(_target_probs())
    m.on_train_epoch_start(0, eng)
    assert m.cls_loss.weight is None
    m.on_train_epoch_start(1, eng)
    w = m.cls_loss.weight
    n = torch.tensor(COUNTS, dtype=torch.float64)
    raw = (1 - 0.999) / (1 - 0.999 ** n)
    assert torch.allclose(w.double(), raw / raw.sum() * 7, rtol=1e-5)


def test_dann_step_advances_grl_and_is_checkpointed():
    torch.manual_seed(0)
    m = DANN(make_config("dann", cls_loss="di", grl_max_iters=10.0), data_info())
    opt = m.configure_optimizers(sgd_builder())[0]
    out = m.training_step(uda_batch(), fake_ctx([opt]))
    assert out["grl_coeff"] == 0.0 and m.grl.iter_num == 1
    out["loss"].backward()
    assert all(p.grad is not None for p in m.discriminator.parameters())
    out = m.training_step(uda_batch(seed=1), fake_ctx([opt]))
    assert out["grl_coeff"] == pytest.approx(math.tanh(0.05))
    fresh = DANN(make_config("dann", cls_loss="di", grl_max_iters=10.0), data_info())
    fresh.load_extra_state(json.loads(json.dumps(m.extra_state())))
    assert fresh.grl.iter_num == 2


def test_safn_loss_composition():
    torch.manual_seed(0)
    m = SAFN(make_config("safn", cls_loss="ce", afn_weight=0.05, delta_r=1.0, bottleneck_dim=12), data_info())
    out = m.training_step(uda_batch(), fake_ctx([]))
    # source + target norm losses, each exactly Δr² = 1
    assert out["loss_norm"].item() == pytest.approx(2.0, rel=1e-5)
    assert out["loss"].item() == pytest.approx(out["loss_cls"].item() + 0.05 * 2.0, rel=1e-5)
    m2 = SAFN(make_config("safn", cls_loss="ce", entropy_weight=0.1, bottleneck_dim=12), data_info())
    out2 = m2.training_step(uda_batch(), fake_ctx([]))
    assert out2["loss"].item() == pytest.approx(out2["loss_cls"].item() + 0.05 * out2["loss_norm"].item()
                                                + 0.1 * out2["entropy"].item(), rel=1e-5)


@pytest.mark.parametrize("opts, match", [
    ({"cls_loss": "focal"}, "cls_loss"),
    ({"num_kk": 2}, "num_kk"),
    ({"t1_epochs": -1}, "t1_epochs"),
    ({"confusion_interval": 0}, "confusion_interval"),
    ({"epsilon": -0.1}, "epsilon"),
    ({"num_k": 0}, "num_k"),
])
def test_bad_options_raise_config_error(opts, match):
    with pytest.raises(ConfigError, match=match):
        MCD(make_config("mcd", **opts), data_info())


def test_di_needs_every_source_class():
    from fairexpr.labels import CANONICAL7
    from fairexpr.methods.base import DataInfo

    info = DataInfo(CANONICAL7, [5, 0, 5, 5, 5, 5, 5], 1, 16)
    with pytest.raises(ConfigError, match="disgust"):
        DANN(make_config("dann", cls_loss="difc"), info)
    DANN(make_config("dann", cls_loss="ce"), info)  # CE does not need counts
