"""``ensemble``: trained networks as one network answering log sum_m w_m softmax(z_m / T_m) (hand-computed), each
member on its own normalisation; dlib's unused layers dropped; checkpoints split over several files; an ensemble
refused as a training start; ONNX export of the whole ensemble."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fairexpr import checkpoint as ck
from fairexpr.config import ConfigError
from fairexpr.labels import CANONICAL7
from fairexpr.models import create_model
from fairexpr.models.registry import ModelError

RES = {"name": "resnet18", "kwargs": {"small_input": True}, "mean": [0.5], "std": [0.25], "temperature": 0.5, "weight": 1}
MOB = {"name": "mobilenet_v2", "kwargs": {"small_input": True, "head": "normed"}, "mean": [0.449], "std": [0.226],
       "temperature": 0.1, "weight": 3}


def _ens(members=(RES, MOB), size=32, k=3):
    torch.manual_seed(0)
    return create_model("ensemble", num_classes=k, members=[dict(m) for m in members], in_chans=1,
                        input_size=[size, size]).eval()


def _constant_head(net, probs):
    """Make a member's linear head answer log(probs) whatever the features (weights 0, bias = log p)."""
    head = net.get_classifier()
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.log(torch.tensor(probs)))


def test_mixture_by_hand():
    # member 0: p = (0.5, 0.5, 0) at T = 1 ... use T = 0.5 on log p: softmax(2 log p) = p^2 / sum p^2
    a = dict(RES, temperature=0.5, weight=1)
    b = dict(RES, temperature=1.0, weight=3)
    e = _ens((a, b), k=2)
    _constant_head(e.members[0], [0.75, 0.25])  # T = 0.5: (0.5625, 0.0625) / 0.625 = (0.9, 0.1)
    _constant_head(e.members[1], [0.2, 0.8])    # T = 1: (0.2, 0.8)
    p = e(torch.rand(2, 1, 32, 32)).softmax(-1)
    # weights 1:3 -> 0.25 * (0.9, 0.1) + 0.75 * (0.2, 0.8) = (0.375, 0.625)
    torch.testing.assert_close(p, torch.tensor([[0.375, 0.625]] * 2), atol=1e-6, rtol=0)
    # the output is a log-probability: its logsumexp is 0
    torch.testing.assert_close(e(torch.rand(1, 1, 32, 32)).logsumexp(-1), torch.zeros(1), atol=1e-6, rtol=0)


def test_each_member_sees_its_own_normalisation_and_temperature():
    e = _ens()
    x = torch.rand(3, 1, 32, 32)
    p = e(x).softmax(-1)
    want = 0
    for net, spec, w in zip(e.members, (RES, MOB), (0.25, 0.75)):
        z = net((x - spec["mean"][0]) / spec["std"][0])
        want = want + w * torch.softmax(z / spec["temperature"], -1)
    torch.testing.assert_close(p, want, atol=1e-6, rtol=1e-5)
    f = e.forward_features(x)
    assert f.shape == (3, e.num_features) and e.num_features == sum(m.num_features for m in e.members)
    assert e.pretrained_cfg == {"input_size": (32, 32), "in_chans": 1, "mean": [0.0], "std": [1.0]}


def test_finite_when_a_member_gives_a_class_probability_zero():
    a = dict(RES, temperature=0.01)
    e = _ens((a, a), k=2)
    with torch.no_grad():
        for net in e.members:
            net.get_classifier().weight.zero_()
            net.get_classifier().bias.copy_(torch.tensor([0.0, 50.0]))  # / 0.01: exp(-5000) = 0 in float32
    out = e(torch.rand(1, 1, 32, 32))
    assert torch.isfinite(out).all() and out[0, 0] < -1000


def test_gradients_reach_every_member():
    e = _ens().train()
    e(torch.rand(2, 1, 32, 32)).sum().backward()
    for net in e.members:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_dlib_member_drops_what_it_never_runs():
    torch.manual_seed(0)
    full = create_model("dlib_resnet29", 7, in_chans=1, feature_stage=3, head="normed").eval()
    x = torch.rand(2, 1, 64, 64)
    before = full.forward_features(x)
    n_before = sum(p.numel() for p in full.parameters())
    assert full.drop_unused() == ["stages.4", "fc"]
    assert not any(k.startswith(("stages.4.", "fc.")) for k in full.state_dict())
    torch.testing.assert_close(full.forward_features(x), before)
    assert sum(p.numel() for p in full.parameters()) < 0.85 * n_before
    with pytest.raises(ModelError, match="descriptor layer was dropped"):
        full.descriptor(torch.rand(1, 1, 112, 112))
    stage4 = create_model("dlib_resnet29", 7, in_chans=1, feature_stage=4)
    assert stage4.drop_unused() == []  # stage 4 runs everything but the descriptor... which it keeps
    spec = {"name": "dlib_resnet29", "kwargs": {"feature_stage": 3, "head": "normed"}, "mean": [0.45], "std": [1.0]}
    e = _ens((spec, dict(MOB)), size=64)
    assert not any(".stages.4." in k or k.startswith("members.0.fc.") for k in e.state_dict())


@pytest.mark.parametrize("members, msg", [
    ([RES], "at least 2 members"),
    ([RES, dict(RES, mean=[0.5, 0.5])], r"member 1: mean must be 1 finite number"),
    ([RES, dict(RES, temperature=0)], r"member 1: temperature must be a positive number"),
    ([RES, dict(RES, weight=-1)], r"member 1: weight must be a positive number"),
    ([RES, dict(RES, std=[0.0])], r"member 1: std must be > 0"),
    ([RES, dict(RES, colour=1)], r"member 1: unknown key\(s\) \['colour'\]"),
    ([RES, {"name": "ensemble", "mean": [0], "std": [1]}], "cannot be a member of an ensemble"),
    ([RES, dict(RES, name="nope")], r"member 1: unknown model 'nope'"),
    ([RES, {"mean": [0], "std": [1]}], r"member 1: missing 'name'"),
])
def test_bad_members_are_one_clear_error(members, msg):
    with pytest.raises(ModelError, match=msg):
        create_model("ensemble", 3, members=members, in_chans=1, input_size=[32, 32])


def test_no_single_classifier_and_no_pretrained(tmp_path):
    e = _ens()
    with pytest.raises(ModelError, match="no single classifier"):
        e.get_classifier()
    with pytest.raises(ModelError, match="cannot be re-headed"):
        e.reset_classifier(5)
    with pytest.raises(ModelError, match="pretrained must be null"):
        (tmp_path / "x.pth").write_bytes(b"0")
        create_model("ensemble", 3, pretrained=str(tmp_path / "x.pth"), members=[RES, RES])


# ----------------------------------------------------------------------------------- checkpoints
def _save(run, e, k=3, split=True):
    side = {"model": {"name": "ensemble", "num_classes": k,
                      "kwargs": {"members": [RES, MOB], "in_chans": 1, "input_size": [32, 32]}},
            "classes": list(CANONICAL7[:k]), "temperature": 1.0,
            "preprocess": {"input_size": [32, 32], "in_chans": 1, "mean": [0.0], "std": [1.0]}}
    ck.save_model(run, e, side)
    if split:
        state = e.state_dict()
        ck.atomic_save_tensors(run / "model.safetensors", {k: v for k, v in state.items() if k.startswith("members.0.")})
        ck.atomic_save_tensors(run / "model.member1.safetensors", {k: v for k, v in state.items() if k.startswith("members.1.")})
        s = json.loads((run / "model.json").read_text())
        s["extra_weights"] = ["model.member1.safetensors"]
        (run / "model.json").write_text(json.dumps(s))
    return run


def test_checkpoint_split_over_files_loads_whole(tmp_path):
    e = _ens()
    run = _save(tmp_path / "run", e)
    m, side = ck.load_model(run)
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(m(x), e(x))
    # one file missing, a key in two files, a bad name: each a clear error naming the file
    s = json.loads((run / "model.json").read_text())
    for extra, msg in ((["model.member9.safetensors"], r"listed in extra_weights\) not found"),
                       (["../x.safetensors"], "is not a .safetensors file name"),
                       ("model.member1.safetensors", "must be a list of file names")):
        (run / "model.json").write_text(json.dumps({**s, "extra_weights": extra}))
        with pytest.raises(ck.CheckpointError, match=msg):
            ck.load_model(run)
    state = e.state_dict()
    ck.atomic_save_tensors(run / "model.member1.safetensors", {k: v for k, v in state.items() if not k.startswith("members.0.")} | {
        "members.0.conv1.weight": state["members.0.conv1.weight"]})
    (run / "model.json").write_text(json.dumps(s))
    with pytest.raises(ck.CheckpointError, match="'members.0.conv1.weight' is also in model.safetensors"):
        ck.load_model(run)


def test_calibrate_save_to_copies_every_weight_file(tmp_path):
    from fairexpr.cli.calibrate import copy_checkpoint

    e = _ens()
    run = _save(tmp_path / "run", e)
    dest = copy_checkpoint(run, tmp_path / "copy")
    assert (dest / "model.member1.safetensors").is_file()
    m, _ = ck.load_model(dest)
    x = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(m(x), e(x))


def test_an_ensemble_cannot_start_training(tmp_path):
    run = _save(tmp_path / "run", _ens(), split=False)
    with pytest.raises(ConfigError, match=r"model.init: .* is an ensemble of 2 networks .*give one of its members"):
        ck.read_source(str(run), "model.init")
    with pytest.raises(ModelError, match="is an ensemble of several networks"):
        create_model("resnet18", 7, pretrained=str(run))


def test_onnx_export_is_the_whole_ensemble(tmp_path):
    pytest.importorskip("onnxruntime")
    from fairexpr.inference.export import export_onnx
    from fairexpr.inference.predictor import OnnxPredictor, TorchPredictor

    run = _save(tmp_path / "run", _ens())
    export_onnx(*ck.load_model(run), tmp_path / "e.onnx")
    x = np.random.default_rng(0).random((4, 1, 32, 32), dtype=np.float32)
    a = TorchPredictor(run).predict_batch(x)
    b = OnnxPredictor(tmp_path / "e.onnx").predict_batch(x)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
    assert math.isclose(float(a.probs.sum(1).mean()), 1.0, abs_tol=1e-6)
