"""``--tta auto`` (the default of predict / eval / serve): a model's sidecar may recommend a TTA mode
(``{"inference": {"tta": MODE}}``), the shipped default recommends crop TTA (the mode in which it meets issue 14's bar),
and every consumer resolves ``auto`` to it: TorchPredictor, the exported ONNX file, ``fairexpr eval``, ``predict``
and ``serve``. A model that names none (a run the user trained) gets none."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fairexpr.checkpoint import atomic_write_json, read_json
from fairexpr.data.base import DataError
from fairexpr.evaluation.tta import AUTO, check_requested, recommended_tta, resolve_tta


def test_recommended_and_resolved_modes_by_hand():
    assert AUTO == "auto"
    assert recommended_tta({}) == "none" and recommended_tta({"inference": {}}) == "none"
    assert recommended_tta({"inference": {"tta": "crops"}}) == "crops"
    assert resolve_tta("auto", {"inference": {"tta": "hflip"}}) == "hflip"
    assert resolve_tta("auto", {}) == "none"
    # an explicit mode wins over the recommendation
    assert resolve_tta("none", {"inference": {"tta": "crops"}}) == "none"
    assert resolve_tta(None, {"inference": {"tta": "crops"}}) == "none"
    with pytest.raises(ValueError, match=r"^m\.json: inference must be a mapping like \{'tta': 'crops'\}, got 'crops'$"):
        recommended_tta({"inference": "crops"}, "m.json")
    with pytest.raises(ValueError, match=r"m\.json: inference\.tta must be one of none\|hflip\|crops, got 'ten'"):
        resolve_tta("auto", {"inference": {"tta": "ten"}}, "m.json")
    with pytest.raises(ValueError, match=r"m\.json: tta must be one of auto\|none\|hflip\|crops, got 'vflip'"):
        resolve_tta("vflip", {}, "m.json")
    assert check_requested(None) == "none" and check_requested("auto") == "auto" and check_requested("crops") == "crops"
    with pytest.raises(ValueError, match=r"^eval: tta must be one of auto\|none\|hflip\|crops, got 5$"):
        check_requested(5, "eval")


def test_a_bad_request_is_refused_before_anything_loads(tmp_path):
    from fairexpr.config import ConfigError
    from fairexpr.engine.evaluate import evaluate_checkpoint

    # the checkpoint does not exist: the mode is what is reported, before the model or the data are read
    with pytest.raises(ConfigError, match=r"^eval: tta must be one of auto\|none\|hflip\|crops, got 'vflip'$"):
        evaluate_checkpoint(tmp_path / "missing", "folder:/nowhere", "test", tta="vflip")


def test_a_bad_index_entry_or_sidecar_is_one_line_at_build_and_export(ckpt, tmp_path):
    import sys

    from fairexpr.checkpoint import load_model
    from fairexpr.inference.export import ExportError, export_onnx

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        from build_zoo import inference_section, recommended_mode
    finally:
        sys.path.pop(0)
    idx = {"models": {"a": {"inference": {"tta": "ten"}}, "b": {}, "c": {"inference": {"tta": "hflip"}}}}
    with pytest.raises(SystemExit, match=r"index\.json: models\.a: inference\.tta must be one of none\|hflip\|crops"):
        inference_section(idx, "a")
    assert recommended_mode(idx, "b") == "none" and recommended_mode(idx, "c") == "hflip"
    model, side = load_model(ckpt)
    with pytest.raises(ExportError, match=r"sidecar: inference must be a mapping"):
        export_onnx(model, {**side, "inference": "crops"}, tmp_path / "out" / "m.onnx")
    assert not (tmp_path / "out").exists()  # refused before anything is exported or written


@pytest.fixture(scope="module")
def ckpt_flip(ckpt, tmp_path_factory) -> Path:
    """The small test checkpoint whose sidecar recommends flip TTA."""
    d = tmp_path_factory.mktemp("flip") / "run"
    shutil.copytree(ckpt, d)
    side = read_json(d / "model.json")
    side["inference"] = {"tta": "hflip"}
    atomic_write_json(d / "model.json", side)
    return d


def test_torch_predictor_auto_follows_the_sidecar(ckpt, ckpt_flip, tmp_path):
    from fairexpr.inference.predictor import TorchPredictor

    faces = [np.random.default_rng(i).integers(0, 256, (48, 48), dtype=np.uint8) for i in range(3)]
    auto = TorchPredictor(ckpt_flip, tta="auto")
    assert auto.tta == "hflip" and auto.describe()["tta"] == "hflip" and auto.describe()["tta_requested"] == "auto"
    np.testing.assert_allclose(auto.predict_faces(faces).probs,
                               TorchPredictor(ckpt_flip, tta="hflip").predict_faces(faces).probs, atol=1e-6)
    assert TorchPredictor(ckpt_flip, tta="none").tta == "none"  # asked for explicitly
    plain = TorchPredictor(ckpt, tta="auto")  # no recommendation: one view
    assert plain.tta == "none" and plain.describe()["tta_requested"] == "auto"
    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    side = read_json(bad / "model.json")
    side["inference"] = {"tta": "ten_crop"}
    atomic_write_json(bad / "model.json", side)
    with pytest.raises(DataError, match=r"checkpoint .*bad: inference\.tta must be one of none\|hflip\|crops"):
        TorchPredictor(bad, tta="auto")
    TorchPredictor(bad, tta="none")  # an explicit mode does not read the recommendation


def test_onnx_export_carries_the_recommendation(ckpt_flip, onnx_file, tmp_path):
    import onnx

    from fairexpr.checkpoint import load_model
    from fairexpr.inference.export import export_onnx, quantize_int8, set_metadata
    from fairexpr.inference.predictor import META_INFERENCE, OnnxPredictor

    model, side = load_model(ckpt_flip)
    f = export_onnx(model, side, tmp_path / "flip.onnx")
    assert OnnxPredictor(f, tta="auto").tta == "hflip" and OnnxPredictor(f, tta="none").tta == "none"
    q = quantize_int8(f, tmp_path / "flip_int8.onnx")
    assert OnnxPredictor(q, tta="auto").tta == "hflip"  # int8 keeps the metadata
    assert OnnxPredictor(onnx_file, tta="auto").tta == "none"  # exported from a model that recommends nothing
    proto = onnx.load(str(f))
    set_metadata(proto, {META_INFERENCE: "{not json"})
    onnx.save(proto, str(tmp_path / "broken.onnx"))
    with pytest.raises(DataError, match=r"broken\.onnx: metadata 'fairexpr\.inference' is not JSON"):
        OnnxPredictor(tmp_path / "broken.onnx", tta="auto")


def run(argv, capsys) -> tuple[int, str, str]:
    from fairexpr.cli import main

    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_predict_and_eval_default_to_the_recommendation(ckpt, ckpt_flip, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "faces" / "happiness"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(folder / f"{i}.png")

    def predict(model, *extra):
        rc, out, err = run(["predict", "--checkpoint", model, "--crops", folder.parent, "--no-progress", *extra], capsys)
        assert rc == 0, out + err
        return out

    data = json.loads(predict(ckpt_flip, "--json"))
    assert data["model"]["tta"] == "hflip" and data["model"]["tta_requested"] == "auto"
    explicit = json.loads(predict(ckpt_flip, "--json", "--tta", "hflip"))
    assert [f["probabilities"] for f in data["faces"]] == [f["probabilities"] for f in explicit["faces"]]
    plain = json.loads(predict(ckpt_flip, "--json", "--tta", "none"))
    assert plain["model"]["tta"] == "none" and plain["faces"][0]["probabilities"] != data["faces"][0]["probabilities"]
    assert "4 face(s) classified" in (human := predict(ckpt_flip)) and "; flip TTA (--tta none is faster)" in human
    assert "TTA" not in predict(ckpt)  # a model that recommends nothing: one view, nothing said
    assert json.loads(predict(ckpt, "--json"))["model"]["tta"] == "none"

    # `fairexpr eval` on the same folder: auto -> the sidecar's mode, written into metrics.json and printed
    rc, out, err = run(["eval", "--checkpoint", ckpt_flip, "--data", f"folder:{folder.parent}", "--out", tmp_path / "ev",
                        "--no-progress"], capsys)
    assert rc == 0, out + err
    assert "(flip TTA)" in out and json.loads((tmp_path / "ev" / "metrics.json").read_text())["tta"] == "hflip"
    rc, out, err = run(["eval", "--checkpoint", ckpt_flip, "--data", f"folder:{folder.parent}", "--out", tmp_path / "ev2",
                        "--no-progress", "--tta", "none"], capsys)
    assert rc == 0 and "TTA" not in out
    assert json.loads((tmp_path / "ev2" / "metrics.json").read_text())["tta"] == "none"


def test_serve_reports_the_resolved_mode(ckpt_flip, monkeypatch):
    from click.testing import CliRunner
    from fastapi.testclient import TestClient

    import fairexpr.inference.service as service
    from fairexpr.cli import cli

    served = {}
    monkeypatch.setattr(service, "serve", lambda app, host, port, sock=None: served.update(app=app, sock=sock))
    r = CliRunner().invoke(cli, ["serve", "--checkpoint", str(ckpt_flip), "--port", "0", "--crops"])
    assert r.exit_code == 0, r.output
    served["sock"].close()
    assert "(detector: none, crops, hflip TTA)" in r.output
    h = TestClient(served["app"]).get("/health").json()
    assert h["tta"] == "hflip" and h["tta_requested"] == "auto"


def test_the_shipped_default_recommends_crop_tta_as_its_index_says():
    """The packaged sidecars carry the index entries' ``inference`` sections (what `build_zoo.py` writes), and the
    default model, with no --checkpoint and no --tta, runs with crop TTA: the mode of its model card's headline rows."""
    import sys

    from fairexpr import zoo
    from fairexpr.inference.predictor import TorchPredictor

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        from build_zoo import inference_section
    finally:
        sys.path.pop(0)
    idx = zoo.index()
    for name in idx["models"]:
        side = read_json(zoo.resolve(name) / "model.json")
        assert side.get("inference") == inference_section(idx, name), name
    assert idx["models"][idx["default"]]["inference"] == {"tta": "crops"}
    p = TorchPredictor(zoo.resolve(None), tta="auto")
    assert p.tta == "crops"
    rows = {r["name"]: r for r in zoo.list_pretrained()}
    assert rows[idx["default"]]["tta"] == "crops"
    from fairexpr.cli.zoo import format_pretrained

    assert "runs with crop TTA, 12 views by default (--tta none: one view)" in format_pretrained([rows[idx["default"]]])
    card = (zoo.resolve(None) / "MODEL_CARD.md").read_text()
    assert "`--tta auto`, the default of `predict`, `eval` and `serve`, runs this model with **crop TTA, 12 views**" in card
