"""train.memory_format and train.precision=bf16-mixed, for every method: channels_last training gives the same
weights as contiguous training (within float tolerance), checkpoints stay contiguous and load either way, and
under bf16-mixed the networks run in bf16 while every loss sees float32 inputs outside autocast."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fairexpr.config import ConfigError, load_config
from fairexpr import checkpoint as ck
from fairexpr.engine.loop import Engine
from fairexpr.engine.precision import is_loss_module, resolve_memory_format

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SYN = "synthetic:fer2013"

# each method's own CPU recipe, shrunk to 2 steps on tiny synthetic faces
METHOD_RECIPES = {
    "supervised": "ldam_drw_cpu.yaml",
    "cucn": "cucn_cpu.yaml",
    "grefel": "grefel_cpu.yaml",
    "face2exp": "face2exp_cpu.yaml",
    "mcd": "difc_mcd_cpu.yaml",
    "dann": "difc_dann_cpu.yaml",
    "safn": "difc_safn_cpu.yaml",
}


def method_config(method: str, sgd: bool = False, **train: object) -> dict:
    path = CONFIGS / METHOD_RECIPES[method]
    extra: dict = {
        "seed": 3,
        "data": {"train": SYN, "train_split": "train", "train_options": {"total": 280, "seed": 1, "size": 32},
                 "val": None, "val_split": None, "test": None, "test_split": None, "label_fraction": 1.0,
                 "target": None, "target_split": None, "target_eval": None, "target_eval_split": None,
                 "unlabelled": None, "image_size": 32, "channels": 1},
        "train": {"epochs": 1, "iters_per_epoch": 2, "batch_size": 28 if method == "grefel" else 16, "max_minutes": None,
                  "progress": False, "eval_batch_size": 64, "eval_tta": "none", **train},
    }
    if sgd:
        # Adam's first steps move every weight by about lr * sign(grad), so a gradient of ~1e-9 whose sign differs
        # between two kernel orders moves a weight by 2 lr; SGD keeps the comparison at float-rounding level
        # (and a small lr keeps two steps of BatchNorm-mode training from amplifying rounding differences)
        extra["optim"] = {"name": "sgd", "lr": 1e-3, "momentum": 0.9}
    if method in ("mcd", "dann", "safn"):
        extra["data"]["target"] = SYN
        extra["data"]["target_split"] = "train"
        extra["data"]["target_options"] = {"total": 140, "seed": 2, "size": 32}
    if method == "face2exp":
        extra["data"]["unlabelled"] = SYN
        extra["data"]["unlabelled_options"] = {"total": 140, "seed": 7, "size": 32}
    return load_config(path, extra=extra)


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIREXPR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAIREXPR_DATA", str(tmp_path / "unused"))


def train(cfg: dict, out: Path) -> Engine:
    eng = Engine(cfg, out)
    eng.run()
    return eng


def train_from_start(cfg: dict, out: Path, monkeypatch) -> tuple[Engine, dict]:
    """Train; also return the method's state right after setup (the common starting point)."""
    init: dict = {}
    orig_setup = Engine._setup

    def spy(self):
        orig_setup(self)
        init.update({k: v.detach().clone() for k, v in self.method.state_dict().items()})

    monkeypatch.setattr(Engine, "_setup", spy)
    eng = train(cfg, out)
    monkeypatch.setattr(Engine, "_setup", orig_setup)
    return eng, init


@pytest.mark.parametrize("method", sorted(METHOD_RECIPES))
def test_channels_last_matches_contiguous(method, tmp_path, monkeypatch):
    # in fp32 (the ResNet-family recipes train in bf16-mixed, whose rounding is not a layout question)
    a, init_a = train_from_start(method_config(method, sgd=True, memory_format="contiguous", precision="32-true"),
                                 tmp_path / "a", monkeypatch)
    b, init_b = train_from_start(method_config(method, sgd=True, memory_format="channels_last", precision="32-true"),
                                 tmp_path / "b", monkeypatch)
    assert not a.channels_last and b.channels_last
    convs = [m for m in b.method.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs if c.kernel_size != (1, 1))
    sa, sb = a.method.state_dict(), b.method.state_dict()
    assert sa.keys() == sb.keys() == init_a.keys()
    moved = 0
    for k in sa:
        if not sa[k].is_floating_point():
            assert torch.equal(sa[k], sb[k]), k
            continue
        assert torch.equal(init_a[k], init_b[k].contiguous()), f"{k}: the two runs did not start from the same weights"
        da, db = sa[k] - init_a[k], sb[k] - init_b[k]
        # The two steps' updates agree to float tolerance. NCHW and NHWC kernels sum in different orders, and
        # a conv right before BatchNorm has a weight gradient that is the small remainder of a large cancelling
        # sum (BN's backward removes the per-channel mean): measured 0.3-0.5 % relative difference after one step
        # for the small-input ResNet stem (1e-5 for the standard stem), which the second step amplifies through
        # BatchNorm's batch statistics to up to ~20 % on the first conv. Each format alone is bit-reproducible.
        # A wrong layout, a lost gradient or a skipped step is a difference of O(1).
        assert (da - db).norm() <= 0.3 * da.norm() + 1e-6, f"{method}: update of {k} differs between formats"
        moved += int(da.norm() > 0)
    assert moved > 0, "training did not change any weight"
    for ha, hb in zip(a.state["history"], b.state["history"]):
        # the logged training loss (Meta-Face2Exp's feedback factor f, a dot product of two gradients' difference,
        # is left out: it is the remainder of a cancellation by design)
        for key in ("train_loss", "train_loss_cls", "train_loss_sup"):
            if key in ha:
                assert ha[key] == pytest.approx(hb[key], rel=1e-3), key
    # the checkpoint of the channels_last run holds the same values, stored contiguously, and loads into
    # either format bit-exactly
    for run, eng in (("a", a), ("b", b)):
        saved = ck.load_tensors(tmp_path / run / "model.safetensors")
        model_sd = eng.method.model.state_dict()
        for k, v in saved.items():
            assert v.is_contiguous()
            assert torch.equal(v, model_sd[k].contiguous()), f"{method}/{run}: checkpoint {k} differs from the trained weights"
    loaded, _ = ck.load_model(tmp_path / "b")
    x = torch.randn(4, 1, 32, 32)
    loaded.eval()
    b.method.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), b.method.model(x.contiguous(memory_format=torch.channels_last)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", sorted(METHOD_RECIPES))
def test_bf16_mixed_runs_networks_in_bf16_and_losses_in_fp32(method, tmp_path, monkeypatch):
    seen: dict[str, list] = {"loss_inputs": [], "loss_autocast": [], "conv_out": []}
    orig_setup = Engine._setup

    def spy_setup(self):
        orig_setup(self)

        def loss_pre(m, args, kwargs):  # registered after the engine's hooks: sees what the loss computes on
            seen["loss_autocast"].append(torch.is_autocast_enabled("cpu"))
            seen["loss_inputs"] += [a.dtype for a in list(args) + list(kwargs.values())
                                    if isinstance(a, torch.Tensor) and a.is_floating_point()]

        def conv_out(m, i, o):
            if m.training:
                seen["conv_out"].append(o.dtype)

        for m in self.method.modules():
            if is_loss_module(m):
                m.register_forward_pre_hook(loss_pre, with_kwargs=True)
        # prepended: sees the conv's own output dtype, before any cast of the engine's hooks
        next(m for m in self.method.modules() if isinstance(m, nn.Conv2d)).register_forward_hook(conv_out, prepend=True)

    monkeypatch.setattr(Engine, "_setup", spy_setup)
    eng = train(method_config(method, precision="bf16-mixed"), tmp_path / "run")
    assert seen["conv_out"] and set(seen["conv_out"]) == {torch.bfloat16}, "the network did not run in bf16"
    assert seen["loss_inputs"], f"{method}: no loss module saw a floating-point input"
    assert set(seen["loss_inputs"]) == {torch.float32}, f"{method}: a loss got {set(seen['loss_inputs'])}"
    assert not any(seen["loss_autocast"]), f"{method}: a loss ran under autocast"
    row = eng.state["history"][-1]
    losses = [v for k, v in row.items() if k.startswith("train_loss") and isinstance(v, float)]
    assert losses and all(torch.isfinite(torch.tensor(losses))), row
    for k, v in eng.method.state_dict().items():
        assert v.dtype != torch.bfloat16, f"{k} stored in bf16 (bf16-mixed keeps fp32 weights)"


def test_bf16_network_outputs_are_fp32_for_method_code(tmp_path):
    """Functional losses in a method's step (MCD's discrepancy, DANN's domain loss) get fp32 network outputs."""
    from fairexpr.engine.precision import keep_losses_fp32
    from fairexpr.methods.base import DataInfo, get_method

    cfg = method_config("mcd")
    m = get_method("mcd")(cfg, DataInfo(classes=tuple("abcdefg"), class_counts=[5] * 7, in_chans=1, image_size=32))
    hooks = keep_losses_fp32(m, "cpu")
    x = torch.randn(2, 1, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        f = m.model.forward_features(x)
        logits = m.model(x)
    assert f.dtype == torch.float32 and logits.dtype == torch.float32
    hooks.remove()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m.model.forward_features(x).dtype == torch.bfloat16  # without the hooks autocast leaves bf16 outputs


def test_memory_format_resolution():
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten())
    lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 7))
    assert resolve_memory_format("auto", conv) is torch.channels_last
    assert resolve_memory_format("auto", lin) is torch.contiguous_format
    assert resolve_memory_format("contiguous", conv) is torch.contiguous_format
    assert resolve_memory_format("channels_last", lin) is torch.channels_last
    with pytest.raises(ConfigError, match="train.memory_format"):
        resolve_memory_format("nhwc", conv)


def test_default_is_channels_last_for_convnets(tmp_path):
    eng = train(method_config("supervised"), tmp_path / "run")
    assert eng.cfg["train"]["memory_format"] == "auto" and eng.channels_last


@pytest.mark.parametrize("override, match", [
    ("train.channels_last=true", "replaced by train.memory_format"),
    ("train.memory_format=nhwc", "train.memory_format"),
    ("train.precision=fp8", "train.precision"),
])
def test_format_and_precision_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides=[override])


def test_fp32_cast_reaches_nested_outputs_and_reset_recovers():
    from collections import namedtuple

    from fairexpr.engine.precision import _to_fp32, keep_losses_fp32

    Out = namedtuple("Out", "logits aux")
    b = torch.ones(2, dtype=torch.bfloat16)
    got = _to_fp32({"a": [b, (b, 3)], "n": Out(b, torch.ones(1, dtype=torch.long))})
    assert got["a"][0].dtype == got["a"][1][0].dtype == torch.float32 and got["a"][1][1] == 3
    assert isinstance(got["n"], Out) and got["n"].logits.dtype == torch.float32 and got["n"].aux.dtype == torch.long

    class Boom(nn.modules.loss._Loss):
        def forward(self, x):
            raise RuntimeError("boom")

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(2, 2)
            self.loss = Boom()

    m = M()
    hooks = keep_losses_fp32(m, "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(RuntimeError):
            m.loss(torch.ones(1))
        assert not torch.is_autocast_enabled("cpu")  # the failed loss left autocast switched off...
        hooks.reset()
        assert torch.is_autocast_enabled("cpu")  # ...until the engine's per-step reset
        assert m.net(torch.ones(1, 2)).dtype == torch.float32
