"""train.batchnorm=frozen (fairexpr/engine/batchnorm.py): running statistics neither used from the batch nor updated,
affine weights still trained; the config value is checked; adapt --init sets it."""
import pytest
import torch
from torch import nn

from fairexpr.config import load_config
from fairexpr.engine.batchnorm import freeze_batchnorm
from fairexpr.errors import ConfigError


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3),
                        nn.BatchNorm1d(3))
    with torch.no_grad():
        net[1].running_mean.fill_(0.5)
        net[1].running_var.fill_(2.0)
    return net


def test_frozen_statistics_are_used_and_kept():
    net = _net()
    assert freeze_batchnorm(net) == (1, 1)  # net[5] still has its initial statistics: left training
    bn = net[1]
    mean0, var0 = bn.running_mean.clone(), bn.running_var.clone()
    net.train()
    x = torch.randn(8, 1, 6, 6) * 3 + 1
    out = net(x)
    assert torch.equal(bn.running_mean, mean0) and torch.equal(bn.running_var, var0)
    assert int(bn.num_batches_tracked) == 0
    # the layer normalised with its running statistics: (h - 0.5) / sqrt(2 + eps) * w + b, by hand
    h = net[0](x)
    expect = (h - 0.5) / torch.sqrt(torch.tensor(2.0) + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(bn(h), expect)
    # the affine parameters still get gradients
    out.sum().backward()
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0


def test_train_mode_updates_without_freeze():
    net = _net()
    net.train()
    net(torch.randn(8, 1, 6, 6))
    assert int(net[1].num_batches_tracked) == 1 and not torch.allclose(net[1].running_mean, torch.full((4,), 0.5))


def test_freeze_survives_train_calls_and_is_idempotent():
    net = _net()
    assert freeze_batchnorm(net) == (1, 1) and freeze_batchnorm(net) == (1, 1)
    assert len(net[1]._forward_pre_hooks) == 1
    net.train()
    net.train(True)
    net(torch.randn(8, 1, 6, 6))
    assert int(net[1].num_batches_tracked) == 0


def test_no_batchnorm_counts_zero():
    assert freeze_batchnorm(nn.Sequential(nn.Linear(2, 2))) == (0, 0)


def test_a_layer_with_initial_statistics_keeps_training_behaviour():
    """A fresh layer (a DANN discriminator's, SAFN's bottleneck's) beside a loaded backbone normalises with the batch
    and learns its statistics; frozen at mean 0 / variance 1 it would not normalise at all."""
    net = _net()
    freeze_batchnorm(net)
    fresh = net[5]
    assert not getattr(fresh, "_fairexpr_frozen_stats", False) and len(fresh._forward_pre_hooks) == 0
    net.train()
    x = torch.randn(16, 1, 6, 6) * 3 + 1
    net(x)
    assert int(fresh.num_batches_tracked) == 1 and not torch.all(fresh.running_mean == 0)
    # batch statistics: the layer's output has (per feature) mean = bias (0) and variance = weight^2 (1)
    h = net[:5](x)
    y = fresh(h)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(0, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    assert int(net[1].num_batches_tracked) == 0  # the loaded one stays frozen


def test_config_value_checked():
    assert load_config(None, ["train.batchnorm=frozen"])["train"]["batchnorm"] == "frozen"
    with pytest.raises(ConfigError, match="train.batchnorm"):
        load_config(None, ["train.batchnorm=eval"])
