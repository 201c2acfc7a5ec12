"""Equations, preprocessing, detection and alignment on real faces, predictors and export parity."""
from __future__ import annotations

import math
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from inference_helpers import center_inside
from fairexpr.data.base import DataError
from fairexpr.inference import (Face, FacePipeline, HaarDetector, OnnxPredictor, Preprocess, TorchPredictor,
                                align_face, normalized_entropy_confidence, similarity_transform, softmax)
from fairexpr.inference.align import box_transform, template
from fairexpr.inference.detect import YuNetDetector, create_detector, parse_yunet

PRE = {"input_size": [48, 48], "in_chans": 1, "mean": [0.5], "std": [0.25]}


def test_softmax_temperature_hand_values():
    p = softmax(np.array([[0.0, math.log(3.0)]]))
    np.testing.assert_allclose(p, [[0.25, 0.75]])
    p2 = softmax(np.array([[0.0, 2 * math.log(3.0)]]), temperature=2.0)  # z / T = [0, log 3]
    np.testing.assert_allclose(p2, [[0.25, 0.75]])
    with pytest.raises(ValueError):
        softmax(np.zeros((1, 2)), 0.0)


def test_normalized_entropy_confidence_hand_values():
    # H([.5,.5,0,0]) = log 2 ; c = 1 - log2 / log4 = 0.5
    c = normalized_entropy_confidence(np.array([[0.5, 0.5, 0, 0], [1, 0, 0, 0], [0.25] * 4]))
    np.testing.assert_allclose(c, [0.5, 1.0, 0.0], atol=1e-12)


def test_preprocess_from_sidecar_and_values():
    pre = Preprocess.from_sidecar({"input_size": [2, 3], "in_chans": 1, "mean": [0.5], "std": [0.25]})
    x = pre(np.full((2, 3, 3), 255, np.uint8))  # white RGB -> luma 1.0 -> (1 - .5) / .25 = 2
    assert x.shape == (1, 2, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x, 2.0)
    pre3 = Preprocess.from_sidecar({"input_size": 4, "in_chans": 3, "mean": 0.0, "std": 1.0})
    assert pre3(np.zeros((8, 8), np.uint8)).shape == (3, 4, 4)
    with pytest.raises(DataError, match="missing"):
        Preprocess.from_sidecar({"input_size": [48, 48]}, "model.json")
    with pytest.raises(DataError, match="in_chans"):
        Preprocess.from_sidecar({**PRE, "in_chans": 2})
    with pytest.raises(DataError, match="mean has 2 values"):
        Preprocess.from_sidecar({**PRE, "mean": [0.1, 0.2]})


@pytest.mark.parametrize("shape, in_chans, size", [((100, 80, 3), 1, 48), ((30, 30), 1, 64), ((48, 48, 3), 3, 64),
                                                   ((120, 90), 3, 48), ((48, 48), 1, 48)])
def test_preprocess_gives_the_training_decoder_pixels_bit_exactly(tmp_path, shape, in_chans, size):
    """A face crop at inference and the same image as a training file reach the network as identical pixels
    (channel conversion, then Pillow bilinear resize, as ``data.cache._decode``)."""
    from PIL import Image

    from fairexpr.data.base import Sample
    from fairexpr.data.cache import _decode

    img = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / "face.png"
    Image.fromarray(img).save(path)
    trained = _decode(Sample(path=str(path), label=0, split="train"), size, "L" if in_chans == 1 else "RGB")
    pre = Preprocess.from_sidecar({"input_size": [size, size], "in_chans": in_chans, "mean": 0.0, "std": 1.0})
    np.testing.assert_array_equal(np.round(pre(img) * 255).astype(np.uint8), trained)


def test_similarity_transform_exact_for_two_points():
    m = similarity_transform(np.array([[10, 10], [20, 10]]), np.array([[0, 0], [0, 10]]))  # 90 deg rotation
    np.testing.assert_allclose(m, [[0, -1, 10], [1, 0, -10]], atol=1e-6)
    with pytest.raises(DataError):
        similarity_transform(np.array([[1, 1]]), np.array([[0, 0]]))


def test_template_matches_box_crop_framing():
    """Eyes at the template's box fractions land at the same pixels via either path."""
    box = (100, 50, 80, 80)
    eyes_img = np.array([[100 + 0.31 * 80, 50 + 0.38 * 80], [100 + 0.69 * 80, 50 + 0.38 * 80]], np.float32)
    m = box_transform(box, (48, 48), 0.1)
    mapped = eyes_img @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(mapped, template(2, (48, 48), 0.1), atol=1e-3)


def test_alignment_undoes_rotation_on_real_face(haar_faces):
    face = haar_faces[0]
    h, w = face.shape[:2]
    eyes = np.array([[0.31 * w, 0.4 * h], [0.69 * w, 0.4 * h]], np.float32)
    canvas = cv2.copyMakeBorder(face, 100, 100, 100, 100, cv2.BORDER_REPLICATE)
    eyes_c = eyes + 100
    rot = cv2.getRotationMatrix2D((canvas.shape[1] / 2, canvas.shape[0] / 2), 25, 1.0)
    rotated = cv2.warpAffine(canvas, rot, canvas.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
    eyes_r = eyes_c @ rot[:, :2].T + rot[:, 2]
    ref = align_face(canvas, Face((100, 100, w, h), 1.0, eyes_c), 96, 0.1).astype(float)
    aligned = align_face(rotated, Face((0, 0, 1, 1), 1.0, eyes_r), 96, 0.1).astype(float)
    # a plain box crop of the rotated face (no landmarks) stays rotated
    bx = tuple(int(v) for v in (eyes_r[:, 0].mean() - w / 2, eyes_r[:, 1].mean() - 0.4 * h, w, h))
    naive = align_face(rotated, Face(bx, 1.0, None), 96, 0.1).astype(float)
    err_aligned, err_naive = np.abs(aligned - ref).mean(), np.abs(naive - ref).mean()
    assert err_aligned < 6 and err_aligned < 0.5 * err_naive, (err_aligned, err_naive)


def test_haar_finds_faces_in_composite_photo(group_photo):
    img, boxes = group_photo
    faces = HaarDetector().detect(img)
    for ref in boxes:
        assert any(center_inside(f.box, ref) for f in faces), (ref, [f.box for f in faces])
    assert len(faces) == len(boxes)


def test_haar_no_face_and_bad_input():
    rng = np.random.default_rng(0)
    assert HaarDetector().detect(np.full((300, 400, 3), 200, np.uint8)) == []
    with pytest.raises(DataError, match="RGB uint8"):
        HaarDetector().detect(rng.random((10, 10)))
    with pytest.raises(DataError, match="unknown face detector"):
        create_detector("mtcnn")


def test_yunet_parsing_and_missing_model(tmp_path):
    row = np.array([[-5, 10, 50, 60, 10, 20, 30, 20, 20, 35, 12, 50, 28, 50, 0.9]], np.float32)
    (f,) = parse_yunet(row, (40, 100))
    assert f.box == (0, 10, 45, 30) and f.landmarks.shape == (5, 2) and f.score == pytest.approx(0.9)
    assert parse_yunet(None, (10, 10)) == []
    with pytest.raises(DataError, match="YuNet model file"):
        YuNetDetector(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(DataError, match="cannot load"):
        YuNetDetector(bad)


def test_pipeline_statuses_on_composite(ckpt, group_photo):
    img, boxes = group_photo
    pipe = FacePipeline(TorchPredictor(ckpt), "haar", min_face=100, batch_size=2)
    recs = pipe.predict_image(img, "group")
    assert [r.status for r in recs] == ["ok", "ok", "ok", "too_small"]
    for r in recs[:3]:
        assert r.label in pipe.classes and abs(sum(r.probs.values()) - 1) < 1e-4
        assert 0 <= r.confidence <= 1 and r.reliable == (r.confidence >= 0.5)
    assert recs[3].label is None and recs[3].box is not None
    empty = pipe.predict_image(np.full((200, 300, 3), 128, np.uint8), "blank")
    assert [(r.status, r.box) for r in empty] == [("no_face", None)]


def test_batching_across_images_matches_single(ckpt, haar_faces):
    pred = TorchPredictor(ckpt)
    items = [(f, f"img{i}", None, None) for i, f in enumerate(haar_faces[:3])]
    a = [r for _, rs in FacePipeline(pred, crops=True, batch_size=2).run(items) for r in rs]
    b = [r for _, rs in FacePipeline(pred, crops=True, batch_size=1).run(items) for r in rs]
    assert [r.source for r in a] == ["img0", "img1", "img2"]
    for x, y in zip(a, b):
        assert x.label == y.label and max(abs(x.probs[c] - y.probs[c]) for c in x.probs) < 1e-5


def test_channels_last_matches_contiguous_model(ckpt, haar_faces):
    """The NHWC fast path (default) gives the plain NCHW model's probabilities, for batch 1 and batch > 1."""
    import torch

    fast, plain = TorchPredictor(ckpt), TorchPredictor(ckpt, channels_last=False)
    assert fast.channels_last and not plain.channels_last
    w = next(p for p in fast.model.parameters() if p.ndim == 4)
    assert w.is_contiguous(memory_format=torch.channels_last)
    for faces in (haar_faces[:1], haar_faces[:4]):
        a, b = fast.predict_faces(faces), plain.predict_faces(faces)
        assert np.abs(a.probs - b.probs).max() < 1e-5 and (a.labels == b.labels).all()


def test_onnx_metadata_and_parity(ckpt, onnx_file, haar_faces):
    tp, op = TorchPredictor(ckpt), OnnxPredictor(onnx_file)
    assert op.classes == tp.classes and op.preprocess == tp.preprocess and op.temperature == 1.0
    assert op.model_info["name"] == "resnet18"
    x = tp.preprocess.batch(haar_faces[:4])
    assert np.abs(tp.predict_batch(x).probs - op.predict_batch(x).probs).max() <= 1e-4
    assert op.predict_batch(x[:1]).probs.shape == (1, 7)  # dynamic batch


def test_temperature_from_sidecar_changes_confidence(ckpt, tmp_path, haar_faces):
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(ckpt, run)
    side = json.loads((run / "model.json").read_text())
    side["temperature"] = 3.0
    (run / "model.json").write_text(json.dumps(side))
    p1, p3 = TorchPredictor(ckpt).predict_faces(haar_faces[:2]), TorchPredictor(run).predict_faces(haar_faces[:2])
    np.testing.assert_allclose(p3.probs, softmax(p1.logits, 3.0), atol=1e-6)
    assert (p3.labels == p1.labels).all() and (p3.confidence < p1.confidence).all()
    side["temperature"] = -1
    (run / "model.json").write_text(json.dumps(side))
    with pytest.raises(DataError, match="temperature"):
        TorchPredictor(run)


def test_onnx_path_never_imports_torch(onnx_file, group_photo_file):
    code = f"""
import sys
from fairexpr.inference import OnnxPredictor, FacePipeline, decode_rgb
pipe = FacePipeline(OnnxPredictor({str(onnx_file)!r}), 'haar', min_face=100)
recs = pipe.predict_image(decode_rgb({str(group_photo_file)!r}))
assert sum(r.status == 'ok' for r in recs) == 3, recs
assert 'torch' not in sys.modules, 'torch was imported'
print('OK')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr


def test_onnx_rejects_foreign_model(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 7])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7])])
    onnx.save(helper.make_model(g), tmp_path / "plain.onnx")
    with pytest.raises(DataError, match="not a fairexpr-exported"):
        OnnxPredictor(tmp_path / "plain.onnx")
    with pytest.raises(DataError, match="not found"):
        OnnxPredictor(tmp_path / "missing.onnx")


def test_int8_dynamic_and_static(onnx_file, tmp_path, haar_faces, ck_dir):
    from fairexpr.inference.export import quantize_int8

    fp = OnnxPredictor(onnx_file)
    calib_faces = [np.asarray(Image.open(p)) for p in sorted((ck_dir / "happy").glob("*.png"))[:16]]
    x = fp.preprocess.batch(haar_faces[:4] + calib_faces[:4])
    ref = fp.predict_batch(x).probs
    for calib in (None, fp.preprocess.batch(calib_faces)):
        q = quantize_int8(onnx_file, tmp_path / f"q{calib is None}.onnx", calib)
        qp = OnnxPredictor(q)
        assert qp.classes == fp.classes and "fairexpr.quantization" in qp.metadata
        p = qp.predict_batch(x).probs
        assert p.shape == ref.shape and np.abs(p - ref).max() < 0.2
        assert q.stat().st_size < 0.5 * onnx_file.stat().st_size


FAST = {"resnet18", "mobilefacenet"}  # the rest run under -m slow (each export takes seconds on CPU)


def _models():
    from fairexpr.models import list_models

    # a composite model (the ensemble) is built from trained members; its ONNX parity is tested in
    # tests/models/test_ensemble_model.py and on the zoo (tests/zoo/test_model_zoo.py)
    return [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n, e in list_models().items()
            if not e.default_cfg.get("composite")]


@pytest.mark.parametrize("name", _models())
def test_every_registered_model_exports_with_parity(name, tmp_path):
    """fp32 ONNX parity (max |dp| <= 1e-4) for each registered architecture; a model that cannot be
    exported must say why (the reason is recorded, and the test fails so it is noticed)."""
    from fairexpr.inference.export import PARITY_TOL, check_registered_models

    (row,) = check_registered_models(tmp_path, [name], batch=2)
    assert row["exportable"], row.get("reason")
    assert row["max_abs_prob_diff"] <= PARITY_TOL
