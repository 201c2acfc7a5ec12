"""CUCN method: two-feature head, RUL mixing as the method uses it (weight direction), the class-weighted
mixed loss, μ-only prediction, parameter groups and option errors — all with hand-computed values."""
import math

import pytest
import torch

from fairexpr.config import ConfigError, load_config
from fairexpr.methods.base import DataInfo
from fairexpr.methods.cucn import CUCN, resolve_class_weights
from fairexpr.models.heads import UncertaintyHead

CLASSES7 = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")


def make(method=None, model="resnet18", classes=CLASSES7, counts=None, optim=None, model_kwargs=None):
    cfg = load_config(None, extra={
        "model": {"name": model, "kwargs": {"small_input": False, **(model_kwargs or {})}},
        "method": {"name": "cucn", **(method or {})},
        "optim": {"name": "adam", "lr": 1e-3, **(optim or {})},
        "data": {"image_size": 32, "channels": 1},
    })
    counts = counts or [10 * (i + 1) for i in range(len(classes))]
    return CUCN(cfg, DataInfo(classes=tuple(classes), class_counts=counts, in_chans=1, image_size=32))


def test_two_feature_head_shapes_and_gradients():
    torch.manual_seed(0)
    m = make(model="cbam_resnet18")
    assert isinstance(m.head, UncertaintyHead) and m.head.feat_dim == 64 and m.head.drop_rate == 0.4
    x = torch.randn(6, 1, 32, 32)
    mu, logvar = m.features(x)
    assert mu.shape == logvar.shape == (6, 64)
    assert m.model(x).shape == (6, 7)
    out = m.compute_loss(x, torch.tensor([0, 1, 2, 3, 4, 5]))
    out["loss"].backward()
    # the uncertainty branch is trained through the mixing weights; CBAM and the classifier get gradients
    for name in ("mu.2.weight", "logvar.2.weight", "classifier.weight"):
        g = m.head.get_parameter(name).grad
        assert g is not None and g.abs().sum() > 0, name
    cbam = [p.grad for n, p in m.model.named_parameters() if ".cbam." in n]
    assert cbam and all(g is not None for g in cbam)


def _hand_setup(method_opts):
    """feat_dim 2, two classes, classifier W = I, b = 0 (so logits = the mixed feature)."""
    m = make({"feat_dim": 2, **method_opts}, classes=("anger", "happiness"), counts=[10, 30])
    with torch.no_grad():
        m.head.classifier.weight.copy_(torch.eye(2))
        m.head.classifier.bias.zero_()
    mu = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    # a = mean(exp(logvar)): 3, 1, 1 (sample 0: mean of 2 and 4 — the mean of the variances, not of logvar)
    logvar = torch.tensor([[math.log(2.0), math.log(4.0)], [0.0, 0.0], [math.log(0.5), math.log(1.5)]])
    m.features = lambda images: (mu, logvar)  # fixed features for the batch
    return m, mu, logvar


def test_mixing_weight_direction_hand_computed():
    m, mu, logvar = _hand_setup({"class_weights": "none"})
    out = m.mix(mu, logvar, torch.tensor([1, 2, 0]))
    # w_i = a_i / (a_i + a_perm[i]) multiplies mu_i (RUL: the MORE uncertain sample weighs MORE)
    torch.testing.assert_close(out["w_i"], torch.tensor([0.75, 0.5, 0.25]))
    torch.testing.assert_close(out["w_j"], torch.tensor([0.25, 0.5, 0.75]))
    expected = torch.tensor([[0.75, 0.25],   # .75*[1,0] + .25*[0,1]
                             [1.0, 1.5],     # .5*[0,1] + .5*[2,2]
                             [1.25, 0.5]])   # .25*[2,2] + .75*[1,0]
    torch.testing.assert_close(out["mixed"], expected)
    torch.testing.assert_close(out["logits"], expected)  # W = I


def ce(z, k):
    return math.log(sum(math.exp(v) for v in z)) - z[k]


def test_weighted_mixed_loss_hand_computed():
    m, _, _ = _hand_setup({"class_weights": [2.0, 1.0]})
    y = torch.tensor([0, 1, 1])
    perm = torch.tensor([1, 2, 0])  # partners' labels y[perm] = [1, 1, 0]
    loss = m.compute_loss(torch.zeros(3, 1, 32, 32), y, perm)["loss"]
    z0, z1, z2 = [0.75, 0.25], [1.0, 1.5], [1.25, 0.5]
    w = [2.0, 1.0]
    l0 = 0.5 * (w[0] * ce(z0, 0) + w[1] * ce(z0, 1))
    l1 = 0.5 * (w[1] * ce(z1, 1) + w[1] * ce(z1, 1))
    l2 = 0.5 * (w[1] * ce(z2, 1) + w[0] * ce(z2, 0))
    assert loss.item() == pytest.approx((l0 + l1 + l2) / 3, rel=1e-6)
    # Eq. 2 as printed (sum of the two terms) is exactly twice RUL's average
    m2, _, _ = _hand_setup({"class_weights": [2.0, 1.0], "average_terms": False})
    assert m2.compute_loss(torch.zeros(3, 1, 32, 32), y, perm)["loss"].item() == pytest.approx(2 * (l0 + l1 + l2) / 3, rel=1e-6)


def test_no_mixing_is_weighted_ce_on_mu_hand_computed():
    m = make({"feat_dim": 2, "mixing": False, "class_weights": [2.0, 1.0]}, classes=("anger", "happiness"), counts=[10, 30])
    with torch.no_grad():
        m.head.classifier.weight.copy_(torch.eye(2))
        m.head.classifier.bias.zero_()
    m.mu_features = lambda images: torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    loss = m.compute_loss(torch.zeros(3, 1, 32, 32), torch.tensor([0, 1, 0]))["loss"]
    # (1/N) Σ W_{y_i} CE(mu_i, y_i): divided by N, not by the sum of weights
    hand = (2.0 * ce([1, 0], 0) + 1.0 * ce([0, 1], 1) + 2.0 * ce([2, 2], 0)) / 3
    assert loss.item() == pytest.approx(hand, rel=1e-6)


def test_predict_classifies_mu_only_and_is_deterministic():
    torch.manual_seed(0)
    m = make(model="cbam_resnet18")
    x = torch.randn(5, 1, 32, 32)
    m.train()
    m.compute_loss(x, torch.arange(5))  # update BN statistics once
    m.eval()
    a, b = m.predict(x), m.predict(x)
    torch.testing.assert_close(a["logits"], b["logits"], rtol=0, atol=0)  # dropout off, no mixing
    assert a["embedding"].shape == (5, 64)
    torch.testing.assert_close(a["logits"], m.head.classifier(a["embedding"]))
    torch.testing.assert_close(a["logits"], m.model(x))  # the deployable model gives the same logits
    torch.testing.assert_close(a["probs"].sum(1), torch.ones(5))
    with torch.no_grad():  # the log-variance branch plays no part at test time
        for p in m.head.logvar.parameters():
            p.add_(torch.randn_like(p))
    torch.testing.assert_close(m.predict(x)["logits"], a["logits"], rtol=0, atol=0)


def test_training_steps_reduce_loss():
    torch.manual_seed(0)
    m = make({"class_weights": "inverse"})
    x = torch.randn(8, 1, 32, 32)
    y = torch.arange(8) % 7
    perm = torch.randperm(8)
    opt = torch.optim.Adam(m.parameter_groups(1e-3))
    m.train()
    losses = []
    for _ in range(8):
        torch.manual_seed(1)  # same dropout masks each step: a pure optimisation check
        loss = m.compute_loss(x, y, perm)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_parameter_groups_backbone_vs_classifier():
    m = make(optim={"lr": 1e-4, "head_lr_mult": 5.0})
    slow, fast = m.parameter_groups(1e-4)
    assert slow["lr"] == 1e-4 and fast["lr"] == pytest.approx(5e-4)
    ids = lambda g: {id(p) for p in g["params"]}  # noqa: E731
    assert ids(fast) == {id(p) for p in m.head.classifier.parameters()}  # RUL: only the fc is fast
    assert ids(slow) | ids(fast) == {id(p) for p in m.parameters()} and not ids(slow) & ids(fast)
    m2 = make({"head_lr": 2e-3, "head_lr_scope": "head"})
    slow2, fast2 = m2.parameter_groups(1e-3)
    assert fast2["lr"] == 2e-3 and ids(fast2) == {id(p) for p in m2.head.parameters()}


def test_head_lr_and_head_lr_mult_together_are_refused():
    with pytest.raises(ConfigError, match=r"method.head_lr=0.002 and optim.head_lr_mult=5.0 both set"):
        make({"head_lr": 2e-3}, optim={"head_lr_mult": 5.0})


def test_class_weight_options():
    info = DataInfo(classes=("anger", "happiness"), class_counts=[10, 30], in_chans=1, image_size=32)
    torch.testing.assert_close(resolve_class_weights("inverse", info), torch.tensor([2.0, 40 / 60]))  # N/(K n_k)
    assert resolve_class_weights("none", info) is None
    torch.testing.assert_close(resolve_class_weights({"happiness": 1.0, "anger": 3.0}, info), torch.tensor([3.0, 1.0]))
    with pytest.raises(ConfigError, match="method.class_weights.*3 weights for 2 classes"):
        resolve_class_weights([1.0, 2.0, 3.0], info)
    with pytest.raises(ConfigError, match="method.class_weights.*missing"):
        resolve_class_weights({"anger": 1.0}, info)
    with pytest.raises(ConfigError, match="method.class_weights"):
        resolve_class_weights("balanced", info)
    with pytest.raises(ConfigError, match="method.class_weights"):
        resolve_class_weights([1.0, -1.0], info)


@pytest.mark.parametrize("opts, match", [
    ({"mixing": "yes"}, "method.mixing"),
    ({"feat_dim": 0}, "method.feat_dim"),
    ({"dropout": 1.0}, "method.dropout"),
    ({"head_lr_scope": "all"}, "method.head_lr_scope"),
    ({"head_lr": -1}, "method.head_lr"),
    ({"mixx": True}, "method.mixx"),
])
def test_bad_options_raise(opts, match):
    with pytest.raises(ConfigError, match=match):
        make(opts)


def test_other_head_is_refused():
    with pytest.raises(ConfigError, match="model.kwargs.head"):
        make(model_kwargs={"head": "linear"})
