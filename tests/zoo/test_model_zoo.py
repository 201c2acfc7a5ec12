"""The model zoo: references (default / name / alias / path), the packaged default model itself (files, fp16
storage, calibration, its card's figures reproduce), and every command using it without --checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fairexpr import zoo as Z
from fairexpr.cli import main
from fairexpr.labels import CANONICAL7
from zoo_helpers import tiny_checkpoint

DEFAULT_DIR = Z.ZOO_DIR / Z.index()["default"]


def run(argv, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture()
def fake_zoo(tmp_path, monkeypatch) -> Path:
    """A zoo folder with one installed model ('tiny', alias 'small') and one not installed ('ghost')."""
    root = tmp_path / "zoo"
    tiny_checkpoint(root / "tiny", fp16=True)
    (root / "tiny" / "MODEL_CARD.md").write_text("# tiny card\n")
    (root / "index.json").write_text(json.dumps({"default": "tiny", "models": {
        "tiny": {"aliases": ["small"], "description": "test model", "recipe": "configs/x.yaml"},
        "ghost": {"description": "never built"}}}))
    monkeypatch.setattr(Z, "ZOO_DIR", root)
    return root


def _build_zoo():
    """benchmarks/build_zoo.py as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_zoo", Path(__file__).resolve().parents[2] / "benchmarks" / "build_zoo.py")
    bz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bz)
    return bz


def _fake_train(calls: list, result: dict):
    """A stand-in for build_zoo's `sh`: records the command and writes the run's result.json as training would."""
    def sh(cmd, log=None):
        calls.append(cmd)
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "result.json").write_text(json.dumps(result))
    return sh


# ------------------------------------------------------------------------------------------- references
def test_references_resolve_to_the_zoo_and_paths_stay_paths(fake_zoo, tmp_path):
    assert Z.resolve(None) == Z.resolve("default") == Z.resolve("tiny") == Z.resolve("small") == fake_zoo / "tiny"
    assert Z.is_reference("default") and Z.is_reference("small") and not Z.is_reference("./default")
    assert not Z.is_reference("nonsense") and not Z.is_reference(str(tmp_path))
    assert Z.resolve("./default") == Path("./default") and Z.resolve(str(tmp_path)) == tmp_path
    assert Z.is_packaged(fake_zoo / "tiny" / "model.json") and not Z.is_packaged(tmp_path)


def test_unknown_missing_and_broken_entries_are_clear_errors(fake_zoo):
    with pytest.raises(Z.ZooError, match=r"no packaged model named 'nope'.*default, tiny, ghost"):
        Z.pretrained_path("nope")
    with pytest.raises(Z.ZooError, match=r"'ghost' is not installed.*make zoo"):
        Z.pretrained_path("ghost")
    rows = {r["name"]: r for r in Z.list_pretrained()}
    assert rows["tiny"]["installed"] and rows["tiny"]["aliases"] == ["default", "small"] and not rows["ghost"]["installed"]
    (fake_zoo / "index.json").write_text("{not json")
    with pytest.raises(Z.ZooError, match="index is unreadable"):
        Z.resolve("default")
    (fake_zoo / "index.json").write_text(json.dumps({"default": "x", "models": {}}))
    with pytest.raises(Z.ZooError, match="default among the models"):
        Z.index()


def test_fp16_storage_loads_into_an_fp32_module(fake_zoo):
    import torch

    from fairexpr.checkpoint import load_model, load_tensors

    stored = load_tensors(fake_zoo / "tiny" / "model.safetensors")
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    model, side = load_model(Z.resolve("default"))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    for k, v in model.state_dict().items():
        assert torch.equal(v, stored[k].to(v.dtype)), k


# ------------------------------------------------------------------------------------------- CLI on a fake zoo
def test_cli_commands_default_to_the_zoo_model(fake_zoo, tmp_path, capsys, monkeypatch):
    face = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)).save(face)
    rc, out, err = run(["predict", "--crops", face, "--json", "--no-progress"], capsys)
    assert rc == 0, err
    data = json.loads(out)
    assert data["model"]["source"] == str(fake_zoo / "tiny") and data["model"]["temperature"] == 0.5
    assert len(data["faces"]) == 1
    rc, _, err = run(["predict", "--checkpoint", "typo", "--crops", face], capsys)
    assert rc == 2 and "--checkpoint typo: no such file or folder and not a packaged model name (known: default, tiny, ghost)" in err
    rc, _, err = run(["predict", "--checkpoint", "default", "--onnx", face, face], capsys)
    assert rc == 2 and "not both" in err
    rc, _, err = run(["predict", "--checkpoint", "ghost", "--crops", face], capsys)
    assert rc == 2 and "not installed" in err and "Traceback" not in err

    # calibrate refuses to write into package data, and writes a calibrated copy with --save-to
    synth = "synthetic:fer2013"
    rc, _, err = run(["calibrate", "--data", synth, "--split", "val"], capsys)
    assert rc == 2 and "packaged model" in err and "--save-to" in err
    before = (fake_zoo / "tiny" / "model.json").read_bytes()
    rc, out, err = run(["calibrate", "--checkpoint", "small", "--data", synth, "--split", "val", "--save-to",
                        tmp_path / "mine", "--json"], capsys)
    assert rc == 0, err
    assert (fake_zoo / "tiny" / "model.json").read_bytes() == before
    mine = json.loads((tmp_path / "mine" / "model.json").read_text())
    assert mine["temperature"] == pytest.approx(json.loads(out)["temperature"]) and mine["copied_from"].endswith("tiny")
    assert (tmp_path / "mine" / "MODEL_CARD.md").read_text() == "# tiny card\n"
    rc, _, err = run(["calibrate", "--checkpoint", "small", "--data", synth, "--split", "val", "--save-to", tmp_path / "mine"], capsys)
    assert rc == 2 and "already holds a checkpoint" in err

    # eval of a packaged model writes under ./fairexpr_eval, never into the package
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(["eval", "--data", synth, "--split", "test", "--json"], capsys)
    assert rc == 0, err
    assert Path(json.loads(out)["out_dir"]) == Path("fairexpr_eval") / "tiny" / "synthetic_test"
    assert (tmp_path / "fairexpr_eval" / "tiny" / "synthetic_test" / "metrics.json").is_file()
    assert not (fake_zoo / "tiny" / "eval").exists()


def test_zoo_and_list_models_pretrained(fake_zoo, tmp_path, capsys):
    rc, out, _ = run(["zoo"], capsys)
    assert rc == 0 and "tiny (default, small): resnet18, 48x48" in out and "ghost: not installed" in out
    rc, out, _ = run(["list-models", "--pretrained", "--json"], capsys)
    assert rc == 0 and [r["name"] for r in json.loads(out)] == ["tiny", "ghost"]
    rc, _, err = run(["list-models", "--pretrained", "--num-classes", "3"], capsys)
    assert rc == 2 and "--num-classes does not apply" in err
    rc, out, _ = run(["zoo", "default", "--card"], capsys)
    assert rc == 0 and out.strip() == "# tiny card"
    rc, out, _ = run(["zoo", "small", "--copy-to", tmp_path / "copy"], capsys)
    assert rc == 0 and (tmp_path / "copy" / "model.safetensors").is_file()
    rc, _, err = run(["zoo", "--card"], capsys)
    assert rc == 2 and "need a model NAME" in err
    rc, _, err = run(["zoo", "nope"], capsys)
    assert rc == 2 and "no packaged model named 'nope'" in err


def _tiny_ensemble_zoo(root: Path) -> Path:
    """A zoo whose default is a tiny ensemble of two small networks, stored one file per member (extra_weights),
    beside the single network 'tiny'."""
    import torch

    from fairexpr import checkpoint as ck
    from fairexpr.models import create_model

    tiny_checkpoint(root / "tiny")
    members = [{"name": "mobilenet_v2", "kwargs": {"small_input": True, "width_mult": 0.25}, "mean": [0.5], "std": [0.25],
                "temperature": 0.5, "weight": 1.0, "label": "a", "source": "runs/a"},
               {"name": "mobilenet_v2", "kwargs": {"small_input": True, "width_mult": 0.25, "head": "normed"},
                "mean": [0.45], "std": [0.2], "temperature": 0.1, "weight": 1.0, "label": "b", "source": "runs/b"}]
    torch.manual_seed(0)
    ens = create_model("ensemble", 7, members=members, in_chans=1, input_size=[48, 48]).eval()
    d = root / "ens"
    ck.save_model(d, ens, {"model": {"name": "ensemble", "num_classes": 7,
                                     "kwargs": {"members": members, "in_chans": 1, "input_size": [48, 48]}},
                           "classes": list(CANONICAL7), "temperature": 0.9, "extra_weights": ["model.member1.safetensors"],
                           "preprocess": {"input_size": [48, 48], "in_chans": 1, "mean": [0.0], "std": [1.0]}})
    state = ens.state_dict()
    ck.atomic_save_tensors(d / "model.safetensors", {k: v.half() for k, v in state.items() if k.startswith("members.0.")})
    ck.atomic_save_tensors(d / "model.member1.safetensors", {k: v.half() for k, v in state.items() if k.startswith("members.1.")})
    (d / "MODEL_CARD.md").write_text("# ens card\n")
    (root / "index.json").write_text(json.dumps({"default": "ens", "models": {
        "tiny": {"aliases": ["small"], "description": "one network"},
        "ens": {"aliases": ["both"], "description": "an ensemble", "members": [{"entry": "tiny"}, {"recipe": "x", "run": "y"}]}}}))
    return d


def test_cli_commands_run_a_default_ensemble(tmp_path, capsys, monkeypatch):
    """predict / export / eval / zoo / calibrate --save-to / serve without --checkpoint when the default model is an
    ensemble split over two files; training from it is refused with the way out."""
    pytest.importorskip("onnxruntime")
    root = tmp_path / "zoo"
    d = _tiny_ensemble_zoo(root)
    monkeypatch.setattr(Z, "ZOO_DIR", root)
    face = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)).save(face)
    rc, out, err = run(["predict", "--crops", face, "--json", "--no-progress"], capsys)
    assert rc == 0, err
    torch_faces = json.loads(out)["faces"]
    assert json.loads(out)["model"]["source"] == str(d) and len(torch_faces) == 1
    rc, out, err = run(["export", "--onnx", tmp_path / "e.onnx", "--json"], capsys)
    assert rc == 0, err
    rc, out, err = run(["predict", "--onnx", tmp_path / "e.onnx", "--crops", face, "--json", "--no-progress"], capsys)
    assert rc == 0, err
    onnx_faces = json.loads(out)["faces"]
    assert onnx_faces[0]["label"] == torch_faces[0]["label"]
    for c in CANONICAL7:
        assert onnx_faces[0]["probabilities"][c] == pytest.approx(torch_faces[0]["probabilities"][c], abs=1e-4)
    rc, out, _ = run(["zoo"], capsys)
    assert rc == 0 and "ens (default, both): ensemble of a + b, 48x48" in out
    rc, out, err = run(["calibrate", "--data", "synthetic:fer2013", "--split", "val", "--save-to", tmp_path / "mine", "--json"], capsys)
    assert rc == 0, err
    assert (tmp_path / "mine" / "model.member1.safetensors").is_file()
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(["eval", "--data", "synthetic:fer2013", "--split", "test", "--json"], capsys)
    assert rc == 0, err
    from click.testing import CliRunner

    import fairexpr.inference.service as service
    from fairexpr.cli import cli

    served = {}
    monkeypatch.setattr(service, "serve", lambda app, host, port, sock=None: served.update(app=app, port=port, sock=sock))
    r = CliRunner().invoke(cli, ["serve", "--crops", "--port", "0"])
    served["sock"].close()
    assert r.exit_code == 0 and f"serving torch model {d} (detector: none, crops)" in r.output, r.output
    rc, _, err = run(["train", "--config", Path(__file__).resolve().parents[2] / "configs" / "ldam_drw_cpu.yaml",
                      "--out", tmp_path / "t", "--no-progress", "data.train=synthetic:fer2013", "data.val=holdout:0.2",
                      "data.train_options={total: 70}", "data.test=null", "model.pretrained=default"], capsys)
    assert rc == 2 and "is an ensemble of several networks" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------- the shipped model
ENTRIES = list(Z.index()["models"])


@pytest.mark.parametrize("name", ENTRIES)
def test_every_packaged_model_is_complete_and_small(name):
    import torch

    from fairexpr.checkpoint import load_model, load_tensors, weight_files

    d = Z.ZOO_DIR / name
    side = json.loads((d / "model.json").read_text())
    files = [Path(f) for f in weight_files(d / "model.safetensors", side)] + [d / "model.json", d / "MODEL_CARD.md"]
    for f in files:
        assert f.is_file(), f
        assert f.stat().st_size <= 10 * 2**20, f
    assert side["classes"] == list(CANONICAL7) and side["temperature"] > 0
    # the temperature minimises validation NLL (an ensemble of calibrated members may lose a little ECE by it)
    cal = side["calibration"]
    assert cal["after"]["nll"] <= cal["before"]["nll"] and cal["after"]["ece"] <= 0.065
    z = side["zoo"]
    assert {"fer2013_private", "fer2013_private_dedup", "ferplus_test", "ckplus48"} <= set(z["test"])
    dtype = {"float32": torch.float32, "float16": torch.float16}[side["storage_dtype"]]
    stored = {v.dtype for f in weight_files(d / "model.safetensors", side) for v in load_tensors(f).values()
              if v.is_floating_point()}
    assert stored == {dtype}
    if dtype == torch.float32:
        assert z["storage_parity"]["argmax_agreement"] == 1.0 and z["storage_parity"]["max_abs_prob_diff"] < 1e-5
    else:  # halved weights: a borderline face may flip
        assert z["storage_parity"]["argmax_agreement"] >= 0.998 and z["storage_parity"]["max_abs_prob_diff"] < 0.05
    model, _ = load_model(d)
    assert model.training is False
    card = (d / "MODEL_CARD.md").read_text()
    assert "benchmarks/build_zoo.py" in card and "Licence situation" in card and "research" in card


def test_the_default_model_is_the_packaged_ensemble_of_packaged_and_recipe_members():
    """The default model is an ensemble of >= 2 equally weighted members, each as index.json names it: a packaged
    member ({"entry": E}) is that packaged network weight for weight (fp16 of it) with its normalisation and
    temperature; a recipe member ({"recipe": R, "run": D}) has its recipe committed and is recorded in the sidecar
    with that recipe and run. Every member keeps the temperature it was calibrated with, which lowered its ECE."""
    import torch

    from fairexpr.checkpoint import load_model

    idx = Z.index()
    entry = idx["models"][idx["default"]]
    ens, side = load_model(Z.resolve("default"))
    specs, records = side["model"]["kwargs"]["members"], side["ensemble"]["members"]
    assert len(specs) == len(records) == len(entry["members"]) >= 2
    assert side["ensemble"]["weights"] == pytest.approx([1 / len(entry["members"])] * len(entry["members"]))
    root = Path(__file__).resolve().parents[2]
    for i, (m, spec, rec) in enumerate(zip(entry["members"], specs, records)):
        assert spec["label"] == rec["label"] == m.get("label", spec["label"])
        if "entry" in m:
            net, nside = load_model(Z.resolve(m["entry"]))
            assert (spec["mean"], spec["std"], spec["temperature"]) == (nside["preprocess"]["mean"],
                                                                        nside["preprocess"]["std"], nside["temperature"])
            for k, v in net.state_dict().items():
                torch.testing.assert_close(ens.members[i].state_dict()[k], v.half().float() if v.is_floating_point() else v,
                                           rtol=0, atol=0)
        else:
            assert (root / m["recipe"]).is_file()  # the recipe that rebuilds it is committed
            assert rec["recipe"] == m["recipe"] + "".join(f" {o}" for o in m.get("overrides", []))
            assert rec["source"] == m["run"]
        assert spec["temperature"] == rec["temperature"] > 0
        assert rec["calibration"]["after"]["ece"] < rec["calibration"]["before"]["ece"]


def test_shipped_model_figures_reproduce_and_confidences_are_calibrated(real_data, tmp_path):
    """Re-evaluate the packaged file on FER+ test: the card's figures are what the file does, and the stored
    temperature makes confidences usable (not the near-uniform softmax of raw cosine logits)."""
    from fairexpr.engine.evaluate import evaluate_checkpoint

    side = json.loads((DEFAULT_DIR / "model.json").read_text())
    rec = side["zoo"]["test"]["ferplus_test"]
    m = evaluate_checkpoint(Z.resolve("default"), f"ferplus:{real_data / 'ferplus'}", "test", options={"num_classes": 7},
                            out_dir=tmp_path / "eval", progress=False)
    assert m["n"] == rec["n"]
    # the build ran on 2 threads; another thread count changes float summation order and can flip a borderline face
    assert m["accuracy"] == pytest.approx(rec["accuracy"], abs=2e-3)
    assert m["balanced_accuracy"] == pytest.approx(rec["balanced_accuracy"], abs=3e-3)
    # calibrated: raw cosine logits give ECE ~0.45; the NLL-fitted temperature gives 0.052 here (0.038 with flip TTA)
    assert m["ece"] <= 0.07
    assert m["accuracy"] >= 0.675 and m["balanced_accuracy"] >= 0.66  # fer: 67.5 / 65.0 on the same set


def test_serve_without_checkpoint_serves_the_default_model(fake_zoo, monkeypatch):
    from click.testing import CliRunner

    import fairexpr.inference.service as service
    from fairexpr.cli import cli

    served = {}
    monkeypatch.setattr(service, "serve", lambda app, host, port, sock=None: served.update(app=app, port=port, sock=sock))
    r = CliRunner().invoke(cli, ["serve", "--crops", "--port", "0"])
    served["sock"].close()
    assert r.exit_code == 0, r.output
    assert (f"serving torch model {fake_zoo / 'tiny'} (detector: none, crops) on http://127.0.0.1:{served['port']}/"
            in r.output and "app" in served)


def test_export_without_checkpoint_exports_the_default_model(fake_zoo, tmp_path, capsys):
    rc, out, err = run(["export", "--onnx", tmp_path / "m.onnx", "--json"], capsys)
    assert rc == 0, err
    from fairexpr.inference.predictor import OnnxPredictor

    p = OnnxPredictor(tmp_path / "m.onnx")
    assert p.temperature == 0.5 and p.classes == tuple(CANONICAL7)


def test_a_packaged_model_or_run_as_pretrained_gives_its_backbone_and_a_fresh_head(fake_zoo, tmp_path):
    import torch

    from fairexpr.checkpoint import load_tensors
    from fairexpr.models import create_model
    from fairexpr.models.registry import ModelError

    stored = load_tensors(fake_zoo / "tiny" / "model.safetensors")
    for ref in ("default", "small", str(fake_zoo / "tiny"), str(fake_zoo / "tiny" / "model.json")):
        torch.manual_seed(1)
        m = create_model("resnet18", num_classes=7, small_input=True, in_chans=1, pretrained=ref)
        assert torch.equal(m.conv1.weight, stored["conv1.weight"].float()), ref
        assert not torch.equal(m.fc.weight, stored["fc.weight"].float()), ref  # same shape, still not loaded
        assert "fc.weight" in m.load_report.missing and "classifier head 'fc' left freshly initialised" in " ".join(m.load_report.notes)
    (tmp_path / "plain").mkdir()
    with pytest.raises(ModelError, match="must be a fairexpr run directory"):
        create_model("resnet18", num_classes=7, pretrained=str(tmp_path / "plain"))
    with pytest.raises(Z.ZooError, match="not installed"):
        create_model("resnet18", num_classes=7, pretrained="ghost")


def test_shipped_model_is_not_underconfident_on_its_validation_split(real_data, tmp_path):
    """Mean top-1 probability on PublicTest (the split it was calibrated and selected on) is within 10 points of
    its accuracy there: raw cosine logits would give ~0.15 against ~0.65."""
    from fairexpr.engine.evaluate import evaluate_checkpoint

    m = evaluate_checkpoint(Z.resolve("default"), f"fer2013:{real_data / 'fer2013'}", "public_test",
                            out_dir=tmp_path / "val", progress=False)
    with np.load(tmp_path / "val" / "predictions.npz") as f:
        top1 = f["probs"].max(1).mean()
    assert top1 >= m["accuracy"] - 0.10, (top1, m["accuracy"])
    assert m["ece"] <= 0.07


def test_shipped_model_on_a_real_photo_with_known_faces():
    """The demo's photo (scikit-image's public-domain portrait, four copies: three sizes, one turned 20 degrees, one
    small): every face is found and aligned, and the smiling astronaut reads as happiness."""
    pytest.importorskip("skimage", reason="scikit-image (fairexpr[demo]) provides the public-domain photo")
    from skimage import data

    from fairexpr.demo import group_photo
    from fairexpr.inference.detect import create_detector, dlib_available
    from fairexpr.inference.pipeline import FacePipeline
    from fairexpr.inference.predictor import TorchPredictor

    if not dlib_available():
        pytest.skip("dlib-bin / face_recognition_models (fairexpr[faces]) not installed")
    recs = FacePipeline(TorchPredictor(Z.resolve("default")), create_detector("auto")).predict_image(group_photo(data.astronaut()))
    ok = [r for r in recs if r.status == "ok"]
    assert len(ok) == 4 and len(recs) == 4
    assert sum(r.label == "happiness" for r in ok) >= 3, [(r.label, r.confidence) for r in ok]


def test_build_zoo_trains_a_staged_entry_after_the_one_it_starts_from(tmp_path, monkeypatch):
    """`start_from` in index.json: build_zoo trains the earlier entry first (unless finished) and starts the later
    one from its run (model.pretrained=<run>); finished runs are not retrained; --no-train refuses a missing run."""
    bz = _build_zoo()
    calls: list = []
    monkeypatch.setattr(bz, "sh", _fake_train(calls, {"best_epoch": 1, "epochs_run": 2, "train_seconds": 60.0}))
    monkeypatch.setattr(bz, "ROOT", tmp_path)
    idx = {"default": "b", "models": {"a": {"recipe": "configs/a.yaml", "run": "runs/a"},
                                       "b": {"recipe": "configs/b.yaml", "run": "runs/b", "start_from": "a"}}}
    with pytest.raises(SystemExit, match="no finished run"):
        bz.train_entry(idx, "b", ["fairexpr"], False, True)
    stages = bz.train_entry(idx, "b", ["fairexpr"], False, False)
    assert [s["entry"] for s in stages] == ["a", "b"] and len(calls) == 2
    assert calls[0][calls[0].index("--config") + 1].endswith("configs/a.yaml") and not any("pretrained" in c for c in calls[0])
    assert f"model.pretrained={tmp_path / 'runs' / 'a'}" in calls[1]
    bz.train_entry(idx, "b", ["fairexpr"], False, False)
    assert len(calls) == 2  # both finished: nothing retrained
    idx["models"]["b"]["start_from"] = "zzz"
    with pytest.raises(SystemExit, match="start_from 'zzz'"):
        bz.train_entry(idx, "b", ["fairexpr"], False, False)
    idx["models"]["b"]["start_from"], idx["models"]["a"]["start_from"] = "a", "b"
    with pytest.raises(SystemExit, match="cycle: b -> a -> b"):
        bz.train_entry(idx, "b", ["fairexpr"], False, False)


def test_build_zoo_assembles_and_packs_an_ensemble_one_file_per_member(tmp_path, monkeypatch):
    """build_zoo's ensemble path on two tiny trained checkpoints (different normalisation and temperature): the
    assembled network is the members' calibrated mixture, packed fp16 one file per member (listed in extra_weights)
    and loadable; members with other classes or input sizes, missing temperatures and oversize files are refused."""
    import torch

    from fairexpr import checkpoint as ck

    bz = _build_zoo()
    a, b = tiny_checkpoint(tmp_path / "a"), tiny_checkpoint(tmp_path / "b")
    sb = json.loads((b / "model.json").read_text())
    sb["preprocess"]["mean"], sb["temperature"] = [0.4], 2.0
    (b / "model.json").write_text(json.dumps(sb))
    srcs = [(a, {"label": "a", "source": "runs/a"}), (b, {"label": "b", "source": "runs/b"})]
    ens, side = bz.assemble(srcs, [1.0, 3.0])
    x = torch.rand(2, 1, 48, 48)
    ma, _ = ck.load_model(a)
    mb, _ = ck.load_model(b)
    want = 0.25 * torch.softmax(ma((x - 0.5) / 0.25) / 0.5, -1) + 0.75 * torch.softmax(mb((x - 0.4) / 0.25) / 2.0, -1)
    torch.testing.assert_close(ens(x).softmax(-1), want, atol=1e-6, rtol=1e-5)
    assert side["preprocess"]["mean"] == [0.0] and side["ensemble"]["weights"] == [0.25, 0.75]
    run, dest = tmp_path / "ens_run", tmp_path / "zoo" / "ens"
    dest.mkdir(parents=True)
    ck.save_model(run, ens, side)
    monkeypatch.setattr(bz, "MAX_FILE_BYTES", 30 * 2**20)  # the tiny members are full ResNet-18s
    packed = bz.pack_members(run, dest, "fp16")
    assert list(packed["files"]) == ["model.safetensors", "model.member1.safetensors"]
    assert json.loads((dest / "model.json").read_text())["extra_weights"] == ["model.member1.safetensors"]
    assert all(k.startswith("members.1.") for k in ck.load_tensors(dest / "model.member1.safetensors"))
    loaded, _ = ck.load_model(dest)
    torch.testing.assert_close(loaded(x).softmax(-1), want, atol=5e-3, rtol=0)
    monkeypatch.setattr(bz, "MAX_FILE_BYTES", 1000)
    with pytest.raises(SystemExit, match="over the 0.000953674 MB a packaged file may take .*nothing written"):
        bz.pack_members(run, dest, "fp16")
    assert ck.load_tensors(dest / "model.safetensors")  # the earlier pack is untouched
    for key, val, msg in (("classes", list(CANONICAL7)[::-1], "classes .* differ"),
                          ("preprocess", {"input_size": [32, 32], "in_chans": 1, "mean": [0.5], "std": [0.25]}, "one shared crop"),
                          ("temperature", None, "no fitted temperature")):
        (b / "model.json").write_text(json.dumps({**sb, key: val}))
        with pytest.raises(SystemExit, match=msg):
            bz.assemble(srcs, [1.0, 1.0])
    (b / "model.json").write_text(json.dumps(sb))
    idx = {"default": "e", "models": {"e": {"members": [{"entry": "e"}, {"recipe": "x.yaml"}]}}}
    with pytest.raises(SystemExit, match=r"members\[0\]: entry 'e' is not another entry"):
        bz.member_checkpoint(idx, "e", 0, {"entry": "e"}, [], False, True)
    with pytest.raises(SystemExit, match=r"expected \{'entry': NAME\} or"):
        bz.member_checkpoint(idx, "e", 1, {"recipe": "x.yaml"}, [], False, True)
    with pytest.raises(SystemExit, match="overrides must be a list of KEY=VALUE"):
        bz.member_checkpoint(idx, "e", 1, {"recipe": "x.yaml", "run": "r", "overrides": "seed=1"}, [], False, True)
    # a recipe member is trained with its overrides (once), then reused
    calls: list = []
    monkeypatch.setattr(bz, "sh", _fake_train(calls, {"best_epoch": 3, "epochs_run": 4, "train_seconds": 120.0}))
    monkeypatch.setattr(bz, "ROOT", tmp_path)
    m = {"recipe": "configs/x.yaml", "run": "runs/x_s1", "overrides": ["seed=1"], "label": "x1"}
    run, info = bz.member_checkpoint(idx, "e", 1, m, ["fairexpr"], False, False)
    assert run == tmp_path / "runs" / "x_s1" and calls[0][-1] == "seed=1" and info["recipe"] == "configs/x.yaml seed=1"
    assert (info["label"], info["best_epoch"], info["train_minutes"]) == ("x1", 3, 2.0)
    bz.member_checkpoint(idx, "e", 1, m, ["fairexpr"], False, False)
    assert len(calls) == 1


@pytest.mark.parametrize("name", ENTRIES)
def test_card_only_rebuilds_each_packaged_card_from_its_sidecar(name, tmp_path, monkeypatch):
    """`build_zoo.py --card-only`: the committed MODEL_CARD.md is exactly what the sidecar's measured figures give
    (so the card cannot drift from the numbers the build recorded)."""
    import shutil

    bz = _build_zoo()
    real = Z.ZOO_DIR
    root = tmp_path / "zoo"
    (root / name).mkdir(parents=True)
    shutil.copyfile(real / "index.json", root / "index.json")
    shutil.copyfile(real / name / "model.json", root / name / "model.json")
    monkeypatch.setattr(Z, "ZOO_DIR", root)
    assert bz.main(["--card-only", "--name", name]) == 0
    assert (root / name / "MODEL_CARD.md").read_text() == (real / name / "MODEL_CARD.md").read_text()


def test_package_data_globs_ship_every_zoo_file():
    """What a non-editable `pip install` copies is pyproject's package-data: every file a packaged model needs (its
    extra_weights files included) must match one of those globs."""
    import fnmatch
    import tomllib

    from fairexpr.checkpoint import weight_files

    root = Path(__file__).resolve().parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["fairexpr"]
    pkg = root / "src" / "fairexpr"
    need = [Z.ZOO_DIR / "index.json"]
    for name in ENTRIES:
        d = Z.ZOO_DIR / name
        side = json.loads((d / "model.json").read_text())
        need += [*weight_files(d / "model.safetensors", side), d / "model.json", d / "MODEL_CARD.md"]
    for f in need:
        rel = f.relative_to(pkg).as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not shipped by package-data {globs}"


def test_build_zoo_evaluates_every_set_without_tta_with_flip_and_with_crops(tmp_path):
    """The card's rows per test set: no TTA, flip TTA (key ``_tta``) and crop TTA (``_crops``), each what
    ``evaluate_checkpoint`` gives with that mode (the crop row is the mean of its 12 views, tested in
    tests/engine/test_eval_tta.py)."""
    from fairexpr.engine.evaluate import evaluate_checkpoint

    bz = _build_zoo()
    ck = tiny_checkpoint(tmp_path / "m")
    ts = {"key": "syn", "name": "Synthetic test", "spec": "synthetic:fer2013", "split": "test",
          "options": {"total": 140, "seed": 3}}
    res = bz.evaluate_all(ck, tmp_path / "run", [ts])
    assert list(res) == ["syn", "syn_tta", "syn_crops"]
    assert [r["name"] for r in res.values()] == ["Synthetic test", "Synthetic test (flip TTA)",
                                                 "Synthetic test (crop TTA, 12 views)"]
    assert [r["tta"] for r in res.values()] == ["none", "hflip", "crops"]
    m = evaluate_checkpoint(ck, "synthetic:fer2013", "test", options=ts["options"], tta="crops", progress=False,
                            out_dir=tmp_path / "direct")
    assert res["syn_crops"]["accuracy"] == m["accuracy"] and res["syn_crops"]["ece"] == pytest.approx(m["ece"])
    assert (tmp_path / "run" / "zoo_build" / "syn_crops" / "predictions.npz").is_file()


def test_ensemble_card_licence_names_each_member_networks_start_once():
    bz = _build_zoo()
    side = lambda *names: {"model": {"kwargs": {"members": [{"name": n} for n in names]}}}  # noqa: E731
    s = bz.ensemble_start(side("dlib_resnet29", "dlib_resnet29"))
    assert s == "starting from " + bz.START_WEIGHTS["dlib_resnet29"]
    s = bz.ensemble_start(side("mobilenet_v2", "dlib_resnet29", "dlib_resnet29"))
    assert s.count("ImageNet") == 2 and s.count("dlib's face-recognition") == 1 and s.index("MobileNetV2") < s.index("dlib's")
    with pytest.raises(SystemExit, match=r"no licence line for member network\(s\) \['vit'\]"):
        bz.ensemble_start(side("vit"))
