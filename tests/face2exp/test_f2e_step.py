"""One full Meta-Face2Exp step: B and A are each updated by their own losses only, the reported losses compose
as L_B = L_s + λ_c L_c + L_f, A's BatchNorm statistics see only its training forward, options are validated."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import f2e_helpers as H
from fairexpr.config import ConfigError
from fairexpr.methods.face2exp import Face2Exp

LR = 0.1


def make(**opts):
    torch.manual_seed(0)
    m = Face2Exp(H.make_config(H.TINY, **opts), H.data_info())
    opt_b, opt_a = m.configure_optimizers(H.plain_sgd(LR))
    g = torch.Generator().manual_seed(1)
    batch = {"labelled": {"image": torch.randn(8, 1, 32, 32, generator=g), "label": torch.arange(8) % 7,
                          "index": torch.arange(8)},
             "unlabelled": {"image": torch.randn(16, 1, 32, 32, generator=g),
                            "image_strong": torch.randn(16, 1, 32, 32, generator=g), "index": torch.arange(16)}}
    return m, opt_b, opt_a, batch


def sgd_update(net, loss):
    grads = torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)
    return [p.detach() - LR * (0 if gr is None else gr) for p, gr in zip(net.parameters(), grads)]


@pytest.mark.parametrize("feedback, bn, view", [("exact", "running", "weak"), ("mpl", "running", "strong"),
                                                ("exact", "batch", "strong")])
def test_each_network_moves_only_by_its_own_loss(feedback, bn, view):
    m, opt_b, opt_a, batch = make(threshold=0.0, lambda_c=0.7, unlabelled_ratio=2, feedback=feedback, pseudo_label_bn=bn,
                                  adaptation_view=view)
    B0, A0 = copy.deepcopy(m.base), copy.deepcopy(m.adaptation)
    out = m.training_step(batch, H.fake_ctx([opt_b, opt_a]))
    f = out["feedback"].item()
    x_l, y_l = batch["labelled"]["image"], batch["labelled"]["label"]
    x_w, x_s = batch["unlabelled"]["image"], batch["unlabelled"]["image_strong"]
    # pseudo-labels: B as at test time (running statistics) by default, MPL's train-mode batch forward with "batch"
    with torch.no_grad():
        q_eval = B0.eval()(x_w).softmax(-1)
    B0.train()
    # B's expected step: L_s + λ_c L_c + f CE(ŷ, B(x_w)) at θ_B, one joint forward
    z = B0(torch.cat([x_l, x_w, x_s]))
    z_l, z_w, z_s = z[:8], z[8:24], z[24:]
    q = q_eval if bn == "running" else z_w.detach().softmax(-1)
    # B's running statistics: exactly the joint training forward (the eval-mode labelling forward updates nothing)
    for (k, b), b0 in zip(m.base.named_buffers(), B0.buffers()):
        assert torch.equal(b, b0), k
    y_hat = q.argmax(-1)
    l_s = F.cross_entropy(z_l, y_l)
    l_c = -(q * z_s.log_softmax(-1)).sum(-1).mean()  # τ = 0: every image kept
    l_f = f * F.cross_entropy(z_w, y_hat)
    assert out["loss_s"].item() == pytest.approx(l_s.item(), rel=1e-5)
    assert out["loss_c"].item() == pytest.approx(l_c.item(), rel=1e-5)
    assert out["loss_f"].item() == pytest.approx(l_f.item(), rel=1e-4, abs=1e-7)
    assert out["loss"].item() == pytest.approx((l_s + 0.7 * l_c + l_f).item(), rel=1e-5)
    assert out["mask"].item() == 1.0
    for p, e in zip(m.base.parameters(), sgd_update(B0, l_s + 0.7 * l_c + l_f)):
        assert torch.allclose(p, e, atol=1e-6)
    # A's expected step: L_u = CE(ŷ, A(x_a)) only (x_a = x_w by default, as the paper; x_s = MPL's student), hard labels
    x_a = x_w if view == "weak" else x_s
    for p, e in zip(m.adaptation.parameters(), sgd_update(A0, F.cross_entropy(A0(x_a), y_hat))):
        assert torch.allclose(p, e, atol=1e-6)
    # A's running BatchNorm statistics: exactly one training forward (on x_a, done by sgd_update above);
    # the feedback measurement forwards on x_FER are undone
    for (k, b), b0 in zip(m.adaptation.named_buffers(), A0.buffers()):
        assert torch.equal(b, b0), k


def test_without_feedback_b_would_move_differently():
    """The feedback term is live: zeroing it (warm-up at step 0 of 10^6) changes B's update but not A's."""
    m1, ob1, oa1, batch = make(unlabelled_ratio=2)
    m2, ob2, oa2, _ = make(unlabelled_ratio=2, warmup_steps=10**6)
    o1 = m1.training_step(batch, H.fake_ctx([ob1, oa1]))
    o2 = m2.training_step(batch, H.fake_ctx([ob2, oa2]))
    assert o1["feedback"].item() != 0.0
    assert o2["loss_f"].item() == pytest.approx(o1["loss_f"].item())  # reported unweighted
    assert all(torch.equal(a, b) for a, b in zip(m1.adaptation.parameters(), m2.adaptation.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(m1.base.parameters(), m2.base.parameters()))


def test_deploy_selects_the_network_and_unlabelled_ratio():
    m, *_ = make(unlabelled_ratio=5)
    assert m.model is m.base and m.unlabelled_ratio == 5  # B is deployed by default (docs/methods.md)
    ma, *_ = make(deploy="adaptation")
    assert ma.model is ma.adaptation and ma.companion_networks() == {"base": ma.base}
    assert m.companion_networks() == {"adaptation": m.adaptation}
    assert m.predict(torch.randn(2, 1, 32, 32))["probs"].shape == (2, 7)
    keys = m.state_dict().keys()
    assert any(k.startswith("base.") for k in keys) and any(k.startswith("adaptation.") for k in keys)
    assert not any(k.startswith("model.") for k in keys)  # self.model is a view, not a third copy


@pytest.mark.parametrize("key,value", [("unlabelled_ratio", 0), ("unlabelled_ratio", 1.5), ("threshold", 1.5),
                                       ("lambda_c", -1), ("temperature", 0), ("feedback", "second_order"),
                                       ("deploy", "both"), ("pseudo_label", "sharp"), ("warmup_steps", -1),
                                       ("adaptation_view", "none"), ("adaptation_lr", 0)])
def test_bad_options_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"method.{key}"):
        Face2Exp(H.make_config(H.TINY, **{key: value}), H.data_info())


def test_fp16_loss_scaling_is_refused():
    cfg = H.make_config(H.TINY)
    cfg["train"]["precision"] = "16-mixed"
    with pytest.raises(ConfigError, match="train.precision"):
        Face2Exp(cfg, H.data_info())


def test_feedback_baseline_hand_computed():
    m, *_ = make(feedback_baseline=0.5)
    # b <- 0.5 b + 0.5 f first, then f - b:  f=1 -> b=0.5 -> 0.5 ;  f=3 -> b=1.75 -> 1.25 ;  f=-1 -> b=0.375 -> -1.375
    assert [m.baselined(torch.tensor(v)).item() for v in (1.0, 3.0, -1.0)] == [0.5, 1.25, -1.375]
    assert m.feedback_ema.item() == 0.375 and "feedback_ema" in dict(m.named_buffers())  # checkpointed with the method
    off, *_ = make()
    assert off.baselined(torch.tensor(2.5)).item() == 2.5 and off.feedback_ema.item() == 0.0
    with pytest.raises(ConfigError, match="feedback_baseline"):
        make(feedback_baseline=1.0)


def test_step_reports_raw_and_baselined_feedback():
    m, opt_b, opt_a, batch = make(unlabelled_ratio=2, feedback_baseline=0.9)
    out = m.training_step(batch, H.fake_ctx([opt_b, opt_a]))
    f = out["feedback"].item()
    assert out["feedback_used"].item() == pytest.approx(f - 0.1 * f, rel=1e-6)  # b = 0.1 f after the first step
