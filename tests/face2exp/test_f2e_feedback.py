"""The de-biasing factor f = η_A · ∇_{θ_A'} CE(y, A(x_FER; θ_A'))ᵀ ∇_{θ_A} CE(ŷ, A(x_FR; θ_A)) on a toy
linear A (logits = W x + b), against gradients written out by hand: ∂CE/∂z = (softmax(z) − onehot) / N,
∂/∂W = ∂zᵀ x, ∂/∂b = Σ ∂z."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import f2e_helpers as H
from fairexpr.methods.face2exp import Face2Exp

K, D, ETA = 3, 4, 0.5


def ce_grads(W: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = x @ W.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = (p - np.eye(K)[y]) / len(y)
    return dz.T @ x, dz.sum(0)


def brute_force(W, b, x_u, y_hat, x_l, y_l, eta):
    gW_old, gb_old = ce_grads(W, b, x_u, y_hat)
    W1, b1 = W - eta * gW_old, b - eta * gb_old  # A's SGD step on L_u
    gW_new, gb_new = ce_grads(W1, b1, x_l, y_l)
    return eta * (np.sum(gW_new * gW_old) + np.sum(gb_new * gb_old)), W1, b1


def setup(seed: int = 0, feedback: str = "exact", lr: float = ETA):
    torch.manual_seed(seed)
    m = Face2Exp(H.make_config(H.LINEAR, feedback=feedback), H.data_info(num_classes=K, size=2))
    opt_b, opt_a = m.configure_optimizers(H.plain_sgd(lr))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 1, 2, 2, generator=g, dtype=torch.float64).float()
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    return m, opt_b, opt_a, x, y


@pytest.mark.parametrize("agree,sign", [(True, 1.0), (False, -1.0)])
def test_exact_factor_matches_brute_force(agree, sign):
    m, opt_b, opt_a, x, y = setup()
    y_hat = y if agree else (y + 1) % K  # pseudo-labels that agree with / contradict the labelled data
    W = m.adaptation.fc.weight.detach().double().numpy().copy()
    b = m.adaptation.fc.bias.detach().double().numpy().copy()
    xn = x.flatten(1).double().numpy()
    f_bf, W1, b1 = brute_force(W, b, xn, y_hat.numpy(), xn, y.numpy(), ETA)
    assert np.sign(f_bf) == sign  # the toy really is a positive / negative case
    base_before = [p.detach().clone() for p in m.base.parameters()]
    q = torch.nn.functional.one_hot(y_hat, K).float()
    loss_u, f = m.adaptation_step(x, q, y_hat, x, y, opt_a, H.fake_ctx([opt_b, opt_a]))
    assert f.item() == pytest.approx(f_bf, rel=1e-4, abs=1e-7)
    assert abs(f.item()) > 1e-3
    # A really took its step on L_u between the two gradients, and B was not touched
    assert np.allclose(m.adaptation.fc.weight.detach().double().numpy(), W1, atol=1e-6)
    assert np.allclose(m.adaptation.fc.bias.detach().double().numpy(), b1, atol=1e-6)
    assert all(torch.equal(a, p) for a, p in zip(base_before, m.base.parameters()))
    assert all(p.grad is None for p in m.adaptation.parameters())  # nothing left over for the next step


def test_factor_uses_the_new_parameters_not_the_old():
    """With a large step, η g(θ_A')ᵀ g_old differs from η g(θ_A)ᵀ g_old: the method must give the former."""
    m, opt_b, opt_a, x, y = setup(seed=3)
    y_hat = (y + 1) % K
    W = m.adaptation.fc.weight.detach().double().numpy().copy()
    b = m.adaptation.fc.bias.detach().double().numpy().copy()
    xn = x.flatten(1).double().numpy()
    gW_old, gb_old = ce_grads(W, b, xn, y_hat.numpy())
    gW_l, gb_l = ce_grads(W, b, xn, y.numpy())
    f_at_old = ETA * (np.sum(gW_l * gW_old) + np.sum(gb_l * gb_old))
    f_bf, _, _ = brute_force(W, b, xn, y_hat.numpy(), xn, y.numpy(), ETA)
    _, f = m.adaptation_step(x, torch.nn.functional.one_hot(y_hat, K).float(), y_hat, x, y, opt_a,
                             H.fake_ctx([opt_b, opt_a]))
    assert abs(f_bf - f_at_old) > 1e-3
    assert f.item() == pytest.approx(f_bf, rel=1e-4)


def test_eta_is_the_current_learning_rate():
    m, opt_b, opt_a, x, y = setup()
    for gr in opt_a.param_groups:
        gr["lr"] = 0.1  # what the engine's schedule does each step
    W = m.adaptation.fc.weight.detach().double().numpy().copy()
    b = m.adaptation.fc.bias.detach().double().numpy().copy()
    xn = x.flatten(1).double().numpy()
    f_bf, _, _ = brute_force(W, b, xn, y.numpy(), xn, y.numpy(), 0.1)
    _, f = m.adaptation_step(x, torch.nn.functional.one_hot(y, K).float(), y, x, y, opt_a, H.fake_ctx([opt_b, opt_a]))
    assert f.item() == pytest.approx(f_bf, rel=1e-4)


@pytest.mark.parametrize("agree", [True, False])
def test_mpl_estimate_agrees_with_exact_to_first_order(agree):
    lr = 0.02
    fs = {}
    for mode in ("exact", "mpl"):
        m, opt_b, opt_a, x, y = setup(seed=1, feedback=mode, lr=lr)
        y_hat = y if agree else (y + 1) % K
        _, f = m.adaptation_step(x, torch.nn.functional.one_hot(y_hat, K).float(), y_hat, x, y, opt_a,
                                 H.fake_ctx([opt_b, opt_a]))
        fs[mode] = f.item()
    assert np.sign(fs["exact"]) == np.sign(fs["mpl"]) == (1 if agree else -1)
    assert fs["mpl"] == pytest.approx(fs["exact"], rel=0.05)  # O(η) relative difference
