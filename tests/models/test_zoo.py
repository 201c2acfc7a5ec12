"""Contract tests run on EVERY registered model (future models are covered automatically)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fairexpr.models import ModelError, create_model, list_models

#: the package's own models; test-only backbones that other test folders register (e.g. the DIFC tests'
#: tiny net) are fixtures, not zoo models, and would otherwise join this list depending on collection order.
#: A composite model (the ensemble) is built from trained members, not from a name alone: its contract (shapes,
#: gradients, checkpoints, in_chans) is tested in test_ensemble_model.py
MODELS = sorted(n for n, e in list_models().items()
                if e.builder.__module__.startswith("fairexpr.") and not e.default_cfg.get("composite"))
#: big models: their contract tests are marked slow (run them with ``FAIREXPR_SLOW=1``)
HEAVY = {"resnet50", "ir50", "grefel", "grefel_small", "reliability_balanced"}


def _size(name: str, model: nn.Module) -> tuple[int, int]:
    entry = list_models()[name]
    return tuple(entry.default_cfg.get("min_input_size", model.pretrained_cfg["input_size"]))


def _params(names: list[str]) -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in names]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("name", _params(MODELS))
def test_contract_shapes_and_cfg(name):
    model = create_model(name, num_classes=5).eval()
    cfg = model.pretrained_cfg
    assert set(cfg) >= {"input_size", "in_chans", "mean", "std"}
    assert len(cfg["mean"]) == len(cfg["std"]) == cfg["in_chans"]
    h, w = _size(name, model)
    x = torch.randn(2, cfg["in_chans"], h, w)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
        out = model(x)
    assert feats.shape == (2, model.num_features)
    assert logits.shape == out.shape == (2, 5)
    torch.testing.assert_close(out, logits)
    model.reset_classifier(3)
    with torch.no_grad():
        assert model(x).shape == (2, 3)


@pytest.mark.parametrize("name", _params(MODELS))
def test_backward_reaches_first_layer(name):
    model = create_model(name, num_classes=4).train()
    h, w = _size(name, model)
    order: list[nn.Module] = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp: order.append(mod))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    out = model(torch.randn(2, model.pretrained_cfg["in_chans"], h, w))
    for hk in hooks:
        hk.remove()
    out.logsumexp(-1).sum().backward()
    first = order[0]
    assert first.weight.grad is not None, f"{name}: no gradient reached the first layer"
    assert torch.isfinite(first.weight.grad).all() and first.weight.grad.abs().sum() > 0
    for n, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), n


@pytest.mark.parametrize("name", _params(MODELS))
def test_pretrained_round_trip(name, tmp_path):
    a = create_model(name, num_classes=6).eval()
    path = tmp_path / "weights.pth"
    torch.save(a.state_dict(), path)
    b = create_model(name, num_classes=6, pretrained=path).eval()
    h, w = _size(name, a)
    x = torch.randn(2, a.pretrained_cfg["in_chans"], h, w)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    report = getattr(b, "load_report", None)
    if report is not None:  # zoo models: everything loaded, nothing left over
        assert not report.missing and not report.unexpected and not report.mismatched


@pytest.mark.parametrize("name", _params(MODELS))
@pytest.mark.parametrize("in_chans", [1, 3])
def test_in_chans(name, in_chans):
    model = create_model(name, num_classes=3, in_chans=in_chans).eval()
    assert model.pretrained_cfg["in_chans"] == in_chans
    assert len(model.pretrained_cfg["mean"]) == in_chans
    h, w = _size(name, model)
    with torch.no_grad():
        assert model(torch.randn(2, in_chans, h, w)).shape == (2, 3)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("bad", [{"no_such_option": 1}, {"in_chans": 2}, {"head": "bogus"}, {"drop_rate": 1.5}])
def test_bad_option_raises_model_error(name, bad):
    with pytest.raises(ModelError):
        create_model(name, **bad)


def test_unknown_model_and_missing_file():
    with pytest.raises(ModelError, match="unknown model"):
        create_model("resnet19")
    with pytest.raises(ModelError, match="does not exist"):
        create_model("resnet18", pretrained="/nonexistent/w.pth")
