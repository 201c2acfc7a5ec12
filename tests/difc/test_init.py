"""model.init / `fairexpr adapt --init RUN|NAME`: adaptation starts from a whole trained source model.

MCD: F = the source network, C1 = its classifier, C2 = the same + noise, so with no noise the adapted network's
first prediction *is* the source model's; DANN loads the whole network; SAFN the backbone (its classifier sits on
the AFN bottleneck). Mismatches (network, head kind, classes, input size, pretrained + init) are one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from difc_helpers import TINY, data_info, make_config, sgd_builder
from fairexpr.config import ConfigError, load_config
from fairexpr.methods.afn import SAFN
from fairexpr.methods.dann import DANN
from fairexpr.methods.mcd import MCD
from fairexpr.models import create_model

from test_adapt_engine import cfg_for, domains, tiny_overrides  # noqa: F401  (the module-scoped two-domain fixture)

ROOT = Path(__file__).resolve().parents[2]
MOBILE = {"small_input": False, "head": "normed", "drop_rate": 0.2}


def _source(name: str = TINY, **kw) -> torch.nn.Module:
    torch.manual_seed(5)
    m = create_model(name, 7, in_chans=1, **kw)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))  # not the fresh initialisation a wrong load would also give
    return m.eval()


def test_mcd_without_noise_predicts_exactly_what_the_source_model_predicts():
    src = _source()
    mcd = MCD(make_config("mcd", init_noise=0.0), data_info())
    notes = mcd.init_from(src.state_dict(), {}, "src")
    assert any("C1 = its linear classifier" in n for n in notes)
    mcd.eval()
    x = torch.randn(5, 1, 16, 16)
    p = mcd.predict(x)["probs"]
    assert torch.allclose(p, src(x).softmax(-1), atol=1e-6)


def test_mcd_second_classifier_is_the_first_plus_scaled_noise():
    src = _source()
    torch.manual_seed(0)
    mcd = MCD(make_config("mcd", init_noise=0.05), data_info())
    mcd.init_from(src.state_dict(), {}, "src")
    w1, w2 = mcd.model.c1.net[-1].weight, mcd.model.c2.net[-1].weight
    assert torch.equal(w1, src.fc.weight)
    rel = ((w2 - w1).abs().mean() / w1.std()).item()  # E|N(0, 0.05^2)| = 0.05 * sqrt(2/pi) = 0.040
    assert 0.025 < rel < 0.055, rel


def test_mcd_normed_head_scales_cosines_by_s_like_the_source_loss():
    src = _source("mobilenet_v2", **MOBILE)
    cfg = {"model": {"name": "mobilenet_v2", "pretrained": None, "kwargs": dict(MOBILE)},
           "method": {"name": "mcd", "head": "normed", "s": 30.0, "init_noise": 0.0}}
    mcd = MCD(cfg, data_info())
    mcd.init_from(src.state_dict(), {}, "src")
    mcd.eval()
    x = torch.randn(4, 1, 32, 32)
    # the source's logits are cosines; trained with LDAM s = 30, its probabilities are softmax(30 cos)
    assert torch.allclose(mcd.predict(x)["probs"], (30.0 * src(x)).softmax(-1), atol=1e-5)
    cfg["method"]["head"] = "linear"
    with pytest.raises(ConfigError, match="has a normed classifier; set method.head=normed"):
        MCD(cfg, data_info()).init_from(src.state_dict(), {}, "src")


def test_dann_loads_the_whole_network_and_refuses_another():
    src = _source()
    dann = DANN(make_config("dann"), data_info())
    assert dann.init_from(src.state_dict(), {}, "src") == [f"whole network from src ({len(src.state_dict())} tensors, strict)"]
    dann.eval()
    x = torch.randn(3, 1, 16, 16)
    assert torch.allclose(dann.predict(x)["logits"], src(x), atol=1e-6)
    other = _source("mobilenet_v2", **MOBILE)
    with pytest.raises(ConfigError, match=r"model.init: mnet does not fit method dann's network \(TinyNet\): missing"):
        dann.init_from(other.state_dict(), {}, "mnet")


def test_safn_takes_the_backbone_only():
    src = _source()
    safn = SAFN(make_config("safn", bottleneck_dim=16), data_info())
    fc_before = safn.model.fc.weight.clone()
    notes = safn.init_from(src.state_dict(), {}, "src")
    assert "freshly initialised" in notes[1]
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in safn.model.backbone.state_dict().items())
    assert torch.equal(safn.model.fc.weight, fc_before)


def test_safn_bottleneck_and_classifier_train_at_head_lr_mult():
    cfg = make_config("safn", bottleneck_dim=16) | {"optim": {"lr": 1e-5, "head_lr_mult": 100.0}}
    safn = SAFN(cfg, data_info())
    slow, fast = safn.parameter_groups(1e-5)
    assert slow["lr"] == 1e-5 and fast["lr"] == pytest.approx(1e-3)
    ids = lambda g: {id(p) for p in g["params"]}  # noqa: E731
    assert ids(fast) == {id(p) for m in (safn.model.bottleneck, safn.model.fc) for p in m.parameters()}
    assert ids(slow) == {id(p) for p in safn.model.backbone.parameters()}
    # one SGD step with equal gradients: the head's weights move 100x as far as the backbone's
    opt = sgd_builder(1e-5)(safn.parameter_groups(1e-5))
    before = {id(p): p.detach().clone() for p in safn.parameters()}
    for p in safn.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    step = {id(p): (p.detach() - before[id(p)]).abs().max().item() for p in safn.parameters()}
    assert step[id(safn.model.fc.weight)] == pytest.approx(1e-3, rel=1e-2)
    assert step[id(next(safn.model.backbone.parameters()))] == pytest.approx(1e-5, rel=1e-2)
    # without the option: one lr for everything (the recipes' behaviour)
    plain = SAFN(make_config("safn", bottleneck_dim=16), data_info()).parameter_groups(0.01)
    assert [g["lr"] for g in plain] == [0.01, 0.01]


def test_head_lr_mult_is_refused_by_a_method_that_ignores_it(domains, tmp_path):  # noqa: F811
    from fairexpr.engine import fit

    src, tgt = domains
    with pytest.raises(ConfigError, match=r"optim.head_lr_mult=10: method 'dann' .*would ignore it; .*cucn, grefel, safn"):
        fit(cfg_for(src, tgt, "dann", 1, ["optim.head_lr_mult=10"]), tmp_path / "dann")
    with pytest.raises(ConfigError, match="'optim.head_lr_mult' must be a number > 0, got 0"):
        cfg_for(src, tgt, "safn", 1, ["optim.head_lr_mult=0"])
    res = fit(cfg_for(src, tgt, "safn", 1, ["optim.head_lr_mult=10"]), tmp_path / "safn")
    assert res["epochs_run"] == 1


def test_init_settings_from_the_packaged_mobilenet_model(domains):  # noqa: F811
    from fairexpr import zoo
    from fairexpr.cli.adapt import build_adapt_config

    src, tgt = domains
    if zoo.index()["models"][zoo.index()["default"]].get("members"):  # the default model is an ensemble
        with pytest.raises(ConfigError, match=r"--init: default is an ensemble of \d networks .*give one of its members"):
            build_adapt_config(str(ROOT / "configs" / "difc_mcd_cpu.yaml"), src, tgt, init="default")
    cfg = build_adapt_config(str(ROOT / "configs" / "difc_mcd_cpu.yaml"), src, tgt, init="fer")
    side = json.loads((ROOT / "src" / "fairexpr" / "zoo" / "fer2013-mobilenetv2-ldam" / "model.json").read_text())
    assert cfg["model"] == {"name": "mobilenet_v2", "pretrained": None, "init": "fer",
                            "kwargs": {k: v for k, v in side["model"]["kwargs"].items() if k != "in_chans"}}
    assert (cfg["data"]["image_size"], cfg["data"]["channels"]) == (64, 1)
    assert cfg["method"]["head"] == "normed" and cfg["method"]["s"] == side["config"]["loss"]["kwargs"]["s"] == 30.0
    cfg = build_adapt_config(str(ROOT / "configs" / "difc_mcd_cpu.yaml"), src, tgt, overrides=["method.s=10"], init="fer")
    assert cfg["method"]["s"] == 10.0  # an override given on the command line still wins
    assert cfg["train"]["batchnorm"] == "frozen"  # the converged source's BatchNorm statistics are kept
    cfg = build_adapt_config(str(ROOT / "configs" / "difc_mcd_cpu.yaml"), src, tgt, overrides=["train.batchnorm=train"],
                             init="fer")
    assert cfg["train"]["batchnorm"] == "train"
    assert build_adapt_config(str(ROOT / "configs" / "difc_mcd_cpu.yaml"), src, tgt)["train"]["batchnorm"] == "train"


def test_pretrained_and_init_together_is_an_error():
    with pytest.raises(ConfigError, match="model.init.*and model.pretrained are both set"):
        load_config(None, ["model.init=default", "model.pretrained=/x.pth"])


def _train_source(src: str, out: Path) -> Path:
    from fairexpr.engine import fit

    cfg = load_config(None, [f"data.train={src}", "data.train_split=null", f"model.name={TINY}", "data.image_size=16",
                             "data.channels=1", "train.epochs=1", "train.batch_size=16", "train.progress=false",
                             "train.eval_batch_size=64"])
    fit(cfg, out)
    return out


def test_cli_adapt_init_end_to_end(domains, tmp_path, monkeypatch, capsys):  # noqa: F811
    from fairexpr.cli import main

    src, tgt = domains
    monkeypatch.setenv("FAIREXPR_DATA", str(tmp_path))
    source_run = _train_source(src, tmp_path / "source")
    over = [o for o in tiny_overrides("mcd", 1) if not o.startswith(("model.name=", "data.image_size=", "data.channels="))]
    out = tmp_path / "adapted"
    rc = main(["adapt", "--config", "configs/difc_mcd_cpu.yaml", "--init", str(source_run), "--source", src, "--target", tgt,
               "--target-eval", tgt, "--out", str(out), "--json", *over, "method.num_k=1"])
    assert rc == 0
    result = json.loads((out / "result.json").read_text())
    assert result["init"]["source"] == str(source_run)
    assert result["init"]["notes"][0].startswith(f"F from {source_run}")
    side = json.loads((out / "model.json").read_text())
    assert side["config"]["model"]["init"] == str(source_run) and side["model"]["kwargs"]["backbone"] == TINY
    # BatchNorm statistics frozen (adapt --init's default): the adapted backbone still has the source's
    assert result["batchnorm"]["mode"] == "frozen" and result["batchnorm"]["frozen_layers"] > 0
    from safetensors.torch import load_file

    src_state, ad_state = load_file(str(source_run / "model.safetensors")), load_file(str(out / "model.safetensors"))
    stats = [k for k in src_state if k.endswith(("running_mean", "running_var"))]
    assert stats
    for k in stats:
        torch.testing.assert_close(ad_state[f"backbone.{k}"].float(), src_state[k].float())
    capsys.readouterr()
    # the source takes 16x16 inputs: a run feeding 32x32 is refused with one line
    rc = main(["adapt", "--config", "configs/difc_mcd_cpu.yaml", "--init", str(source_run), "--source", src, "--target", tgt,
               "--out", str(tmp_path / "bad"), *over, "method.num_k=1", "data.image_size=32"])
    err = capsys.readouterr().err
    assert rc == 2 and "takes [16, 16] x 1 channel(s); this run feeds 32x32" in err and "Traceback" not in err
    rc = main(["adapt", "--config", "configs/difc_mcd_cpu.yaml", "--init", str(tmp_path / "nowhere"), "--source", src,
               "--target", tgt, "--out", str(tmp_path / "bad2"), *over])
    err = capsys.readouterr().err
    assert rc == 2 and "--init:" in err and "nowhere" in err and "Traceback" not in err


def test_dann_init_freezes_the_source_statistics_but_not_the_fresh_discriminator(domains, tmp_path, monkeypatch):  # noqa: F811
    """adapt --init with DANN: the source network's BatchNorm layers are frozen, the new domain discriminator's two
    (still at their initial statistics) normalise with the batch and learn their statistics."""
    from fairexpr.cli import main
    from safetensors.torch import load_file

    src, tgt = domains
    monkeypatch.setenv("FAIREXPR_DATA", str(tmp_path))
    source_run = _train_source(src, tmp_path / "source")
    n_source_bn = sum(1 for k in load_file(str(source_run / "model.safetensors")) if k.endswith("running_mean"))
    over = [o for o in tiny_overrides("dann", 1) if not o.startswith(("model.name=", "data.image_size=", "data.channels="))]
    out = tmp_path / "adapted"
    rc = main(["adapt", "--config", "configs/difc_dann_cpu.yaml", "--init", str(source_run), "--source", src,
               "--target", tgt, "--target-eval", tgt, "--out", str(out), "--json", *over])
    assert rc == 0
    result = json.loads((out / "result.json").read_text())
    assert result["batchnorm"] == {"mode": "frozen", "frozen_layers": n_source_bn, "training_layers": 2}
    # the training state: the discriminator's statistics moved away from their initial (0, 1), the source's did not
    last = load_file(str(out / "last.safetensors"))
    disc = [k for k in last if k.startswith("method/discriminator.") and k.endswith("running_mean")]
    assert len(disc) == 2 and all(last[k].abs().sum() > 0 for k in disc)
    src_state = load_file(str(source_run / "model.safetensors"))
    for k in (k for k in src_state if k.endswith("running_mean")):
        torch.testing.assert_close(last[f"method/model.{k}"].float(), src_state[k].float())


def test_cell_key_includes_the_batchnorm_freeze_rule(monkeypatch):
    """A benchmark cell run under another `frozen` rule is another cell (rule 5: no stale numbers)."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _cells
    from fairexpr.engine import batchnorm

    cfg = load_config(None, ["train.batchnorm=frozen"])
    k1 = _cells.config_key(cfg)
    monkeypatch.setattr(batchnorm, "FREEZE_RULE", "every-layer")
    assert _cells.config_key(cfg) != k1
    plain = load_config(None, [])
    k2 = _cells.config_key(plain)
    monkeypatch.setattr(batchnorm, "FREEZE_RULE", "another")
    assert _cells.config_key(plain) == k2  # train mode: the rule does not apply
