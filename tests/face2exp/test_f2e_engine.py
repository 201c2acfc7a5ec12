"""Meta-Face2Exp end to end: through the engine on tiny synthetic FER data with synthetic or real unlabelled
faces, from the CLI with the CPU recipe, and resume (both networks, both optimizers) bit-exactly."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import f2e_helpers as H
from fairexpr.config import ConfigError, load_config
from fairexpr import checkpoint as ck
from fairexpr.engine import fit
from fairexpr.methods.face2exp import Face2Exp

ROOT = Path(__file__).resolve().parents[2]
SYNTH_UNL = ["data.unlabelled=synthetic:fer2013", "data.unlabelled_options={total: 200, seed: 7, size: 32}"]


def cfg(epochs: int = 2, extra: list[str] = (), **method):
    return load_config(None, ["method.name=face2exp", "sampler.name=class_balanced",
                              *H.engine_overrides(epochs, **method), *SYNTH_UNL, *extra])


def test_engine_trains_both_networks_and_saves_both(tmp_path):
    res = fit(cfg(2, ["data.val=holdout:0.15"], feedback="mpl"), tmp_path / "run")
    hist = res["history"]
    assert res["epochs_run"] == 2 and len(hist) == 2
    for row in hist:
        for k in ("train_loss_s", "train_loss_c", "train_loss_u", "train_loss_f", "train_feedback", "train_mask"):
            assert k in row
    assert any(abs(r["train_feedback"]) > 0 for r in hist)
    assert hist[1]["train_loss_u"] < hist[0]["train_loss_u"]  # A fits B's pseudo-labels
    tensors = ck.load_tensors(tmp_path / "run" / "last.safetensors")
    assert any(k.startswith("method/base.") for k in tensors) and any(k.startswith("method/adaptation.") for k in tensors)
    assert any(k.startswith("optim0/") for k in tensors) and any(k.startswith("optim1/") for k in tensors)
    model, side = ck.load_model(tmp_path / "run")
    assert side["model"]["name"] == H.TINY and side["method"] == "face2exp"
    assert res["eval"]["val"]["n"] > 0
    p = model(torch.randn(2, 1, 32, 32)).softmax(-1)
    assert torch.allclose(p.sum(1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("deploy, other", [("adaptation", "base"), ("base", "adaptation")])
def test_the_network_not_deployed_is_saved_and_evaluated_too(tmp_path, deploy, other):
    res = fit(cfg(1, ["data.val=holdout:0.15", "data.test=synthetic:fer2013", "data.test_split=test",
                      "data.test_options={total: 140, seed: 3, size: 32}"], deploy=deploy), tmp_path / "run")
    run = tmp_path / "run"
    deployed, _ = ck.load_model(run)
    comp, side = ck.load_model(run / f"{other}.json")
    assert side["network"] == other and side["epoch"] == json.loads((run / "model.json").read_text())["epoch"]
    state = ck.load_tensors(run / "last.safetensors")  # the last epoch is the best one here (1 epoch)
    for k, v in comp.state_dict().items():
        assert torch.equal(v, state[f"method/{other}.{k}"]), k
    for k, v in deployed.state_dict().items():
        assert torch.equal(v, state[f"method/{deploy}.{k}"]), k
    assert set(res["eval_companions"]) == {other}
    for role in ("val", "test"):
        ev = res["eval_companions"][other][role]
        assert (run / "eval" / other / role / "metrics.json").is_file() and ev["n"] == res["eval"][role]["n"]
    # B and A learn from different losses: the companion is not a copy of the deployed network
    assert any(not torch.equal(x, y) for x, y in zip(deployed.state_dict().values(), comp.state_dict().values()))


def test_methods_without_companions_write_no_extra_checkpoint(tmp_path):
    c = load_config(None, ["method.name=supervised", *[o for o in H.engine_overrides(1) if not o.startswith("method.")]])
    res = fit(c, tmp_path / "run")
    assert "eval_companions" not in res
    assert sorted(p.name for p in (tmp_path / "run").glob("*.safetensors")) == ["last.safetensors", "model.safetensors"]


def test_resume_is_bit_exact_for_both_networks_and_optimizers(tmp_path):
    c = cfg(2, ["schedule.name=constant"])  # a 1-epoch cosine would differ from the first half of a 2-epoch one
    fit(c, tmp_path / "straight")
    c1 = dict(c, train=dict(c["train"], epochs=1))
    fit(c1, tmp_path / "resumed")
    with pytest.raises(ConfigError, match="--resume"):
        fit(c, tmp_path / "resumed")
    fit(c, tmp_path / "resumed", resume=True)
    a = ck.load_tensors(tmp_path / "straight" / "last.safetensors")
    b = ck.load_tensors(tmp_path / "resumed" / "last.safetensors")
    assert a.keys() == b.keys()
    assert any(k.startswith("method/adaptation.") for k in a) and any(k.startswith("optim1/") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert json.loads((tmp_path / "resumed" / "last.json").read_text())["state"]["epoch"] == 2


def test_missing_unlabelled_data_is_a_config_error(tmp_path):
    c = load_config(None, ["method.name=face2exp", *H.engine_overrides(1)])
    with pytest.raises(ConfigError, match="data.unlabelled"):
        fit(c, tmp_path / "run")


def test_recipes_load_and_name_only_known_options(monkeypatch):
    monkeypatch.setenv("FAIREXPR_DATA", "/data")
    for name in ("face2exp.yaml", "face2exp_cpu.yaml", "face2exp_mobilenet_cpu.yaml"):
        c = load_config(ROOT / "configs" / name)
        assert c["method"]["name"] == "face2exp" and c["sampler"]["name"] == "class_balanced"
        assert set(c["method"]) - {"name"} <= set(Face2Exp.option_defaults)
        assert c["data"]["unlabelled"].startswith("faces:/data/") and c["data"]["label_fraction"] == 0.1
    assert load_config(ROOT / "configs" / "face2exp.yaml")["method"]["unlabelled_ratio"] == 7


def test_cli_train_with_real_unlabelled_faces(real_data, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from fairexpr.cli import cli

    src = real_data / "utkface" / "crop_part1"
    if not src.is_dir():
        pytest.skip(f"{src} not found")
    faces = tmp_path / "faces"
    faces.mkdir()
    for p in sorted(src.iterdir())[:64]:
        shutil.copy(p, faces / p.name)
    out = tmp_path / "run"
    args = ["train", "--config", str(ROOT / "configs" / "face2exp_cpu.yaml"), "--out", str(out), "--json",
            *H.engine_overrides(1), "data.test=synthetic:fer2013", "data.test_split=test",
            "data.test_options={total: 420, size: 32}", f"data.unlabelled=faces:{faces}",
            "data.val=null", "method.warmup_steps=0", "method.consistency_warmup_steps=0"]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    result = json.loads((out / "result.json").read_text())
    assert result["epochs_run"] == 1 and result["steps"] >= 3
    assert result["eval"]["test"]["n"] > 0
    metrics = json.loads((out / "eval" / "test" / "metrics.json").read_text())
    assert set(metrics["per_class_accuracy"]) == set(metrics["classes"])
    side = json.loads((out / "model.json").read_text())
    assert side["config"]["data"]["unlabelled"] == f"faces:{faces}" and side["train_info"]["label_fraction"] == 0.3
