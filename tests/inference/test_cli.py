"""`fairexpr predict / export / calibrate` end to end on real faces, composites and videos."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fairexpr.cli import main


def run(argv, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def ck_subset(ck_dir, tmp_path_factory) -> Path:
    """A `folder`-format tree of symlinks to 4 CK+48 crops per class (no data copied)."""
    root = tmp_path_factory.mktemp("ck")
    for cdir in sorted(p for p in ck_dir.iterdir() if p.is_dir()):
        (root / cdir.name).mkdir()
        for f in sorted(cdir.glob("*.png"))[::3][:4]:
            (root / cdir.name / f.name).symlink_to(f)
    return root


def test_predict_crops_csv_json(ckpt, ck_subset, tmp_path, capsys):
    out_csv, out_json = tmp_path / "p.csv", tmp_path / "p.json"
    rc, out, _ = run(["predict", "--checkpoint", ckpt, "--crops", ck_subset, "--out-csv", out_csv, "--out-json",
                      out_json, "--no-progress", "--batch-size", "5", "--threshold", "0.0"], capsys)
    assert rc == 0, out
    rows = list(csv.DictReader(out_csv.open()))
    n = len(list(ck_subset.rglob("*.png")))
    assert len(rows) == n and all(r["status"] == "ok" and r["reliable"] == "True" for r in rows)
    assert {"p_anger", "p_neutral", "confidence", "x", "w"} <= set(rows[0])
    p = np.array([[float(r[f"p_{c}"]) for c in ("anger", "disgust", "fear", "happiness", "sadness", "surprise",
                                                 "neutral")] for r in rows])
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-4)
    data = json.loads(out_json.read_text())
    assert len(data["faces"]) == n and data["bad_files"] == [] and data["counts"]["ok"] == n


def test_predict_photos_bad_files_strict_and_annotate(ckpt, group_photo_file, tmp_path, capsys):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "group.jpg").write_bytes(group_photo_file.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "empty.png").write_bytes(b"")
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(folder / "blank.png")
    ann = tmp_path / "ann"
    args = ["predict", "--checkpoint", ckpt, folder, "--min-face", "100", "--annotate", ann, "--json"]
    rc, out, _ = run(args, capsys)
    assert rc == 0
    data = json.loads(out)
    statuses = sorted((Path(f["source"]).name, f["status"]) for f in data["faces"])
    assert statuses == [("blank.png", "no_face")] + [("group.jpg", "ok")] * 3 + [("group.jpg", "too_small")]
    assert sorted(Path(b["path"]).name for b in data["bad_files"]) == ["broken.jpg", "empty.png"]
    assert "empty" in " ".join(b["error"] for b in data["bad_files"])
    assert (ann / "group.jpg").is_file() and (ann / "blank.jpg").is_file()
    assert (ann / "group.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG, as its name says
    assert not [p.name for p in ann.iterdir() if p.name.startswith(".")]  # written atomically: no temp file left
    rc, out, err = run(args[:-1] + ["--strict", "--no-progress"], capsys)
    assert rc == 1 and "unreadable: " in out and "broken.jpg" in out


def test_predict_onnx_matches_torch(ckpt, onnx_file, group_photo_file, tmp_path, capsys):
    res = {}
    for flag, model in (("--checkpoint", ckpt), ("--onnx", onnx_file)):
        rc, out, _ = run(["predict", flag, model, group_photo_file, "--json", "--min-face", "100"], capsys)
        assert rc == 0
        res[flag] = json.loads(out)["faces"]
    for a, b in zip(res["--checkpoint"], res["--onnx"]):
        assert a["status"] == b["status"] and a["label"] == b["label"]
        if a["probabilities"]:
            assert max(abs(a["probabilities"][c] - b["probabilities"][c]) for c in a["probabilities"]) < 1e-4


def _write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> None:
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()


def test_predict_video_timeline_and_summary(ckpt, haar_faces, tmp_path, capsys):
    from inference_helpers import composite

    face_frame, _ = composite(haar_faces[:1], [200], canvas=(320, 320))
    frames = [face_frame] * 6 + [np.full((320, 320, 3), 235, np.uint8)] * 4  # 60 % face, 40 % no face
    vid = tmp_path / "clip.avi"
    _write_video(vid, frames)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "corrupt.avi").write_bytes(np.random.default_rng(0).bytes(4096))
    ann = tmp_path / "ann"
    rc, out, _ = run(["predict", "--checkpoint", ckpt, vid, tmp_path / "empty.mp4", tmp_path / "corrupt.avi",
                      "--every-n", "2", "--annotate", ann, "--json"], capsys)
    assert rc == 0
    data = json.loads(out)
    frames_seen = sorted({f["frame"] for f in data["faces"]})
    assert frames_seen == [0, 2, 4, 6, 8]
    assert data["faces"][0]["time"] == pytest.approx(0.0) and data["faces"][-1]["time"] == pytest.approx(0.8)
    summ = data["videos"][str(vid)]
    assert summ["frames"] == 5 and summ["no_face"] == pytest.approx(0.4)
    assert sum(summ["share"].values()) == pytest.approx(0.6)
    assert Path(summ["timeline_png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Path(summ["summary_csv"]).is_file()
    assert (ann / "clip_frames" / "f000000.jpg").is_file()
    bad = {Path(b["path"]).name: b["error"] for b in data["bad_files"]}
    assert set(bad) == {"empty.mp4", "corrupt.avi"} and "empty" in bad["empty.mp4"]


def test_predict_argument_errors(ckpt, onnx_file, tmp_path, capsys):
    rc, _, err = run(["predict", "--checkpoint", ckpt, "--onnx", onnx_file, tmp_path], capsys)
    assert rc == 2 and "not both" in err
    rc, _, err = run(["predict", "--checkpoint", ckpt, "--every-n", "2", "--fps", "3", tmp_path], capsys)
    assert rc == 2 and "not both" in err
    rc, _, err = run(["predict", "--checkpoint", ckpt, "--detector", "yunet", tmp_path], capsys)
    assert rc == 2 and "YuNet model file" in err


def test_export_cli_with_int8_and_accuracy(ckpt, ck_subset, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    rc, o, e = run(["export", "--checkpoint", ckpt, "--onnx", out, "--int8", "--calib-data", f"folder:{ck_subset}",
                    "--calib-n", "16", "--eval-data", f"folder:{ck_subset}", "--json"], capsys)
    assert rc == 0, e
    rep = json.loads(o)
    assert rep["parity_ok"] and rep["int8"]["mode"] == "static" and Path(rep["int8"]["onnx"]).is_file()
    assert rep["eval"]["n"] > 0 and "accuracy_change" in rep["eval"]


def test_calibrate_stores_temperature(ckpt, ck_subset, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(ckpt, run_dir)
    rc, o, e = run(["calibrate", "--checkpoint", run_dir, "--data", f"folder:{ck_subset}", "--json"], capsys)
    assert rc == 0, e
    rep = json.loads(o)
    side = json.loads((run_dir / "model.json").read_text())
    assert side["temperature"] == pytest.approx(rep["temperature"]) and rep["temperature"] > 0
    assert rep["after"]["nll"] <= rep["before"]["nll"] + 1e-9
    assert Path(rep["reliability_png"]).is_file()
    from fairexpr.inference import TorchPredictor

    assert TorchPredictor(run_dir).temperature == pytest.approx(rep["temperature"])


def test_predict_tta_hflip_torch_onnx_and_mirrored_inputs(ckpt, onnx_file, ck_subset, tmp_path, capsys):
    """--tta hflip = mean of the plain prediction and the prediction on the mirrored crop; ONNX agrees."""
    classes = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
    mirror = tmp_path / "mirror"
    files = sorted(ck_subset.rglob("*.png"))[:6]
    mirror.mkdir()
    for i, f in enumerate(files):
        Image.fromarray(np.asarray(Image.open(f))[:, ::-1]).save(mirror / f"{i:02d}.png")
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    for i, f in enumerate(files):
        (plain_dir / f"{i:02d}.png").symlink_to(f)

    def probs(model_flag, model, folder, tta):
        rc, out, _ = run(["predict", model_flag, model, "--crops", folder, "--json", "--no-progress", "--tta", tta], capsys)
        assert rc == 0, out
        data = json.loads(out)
        assert data["model"]["tta"] == tta
        faces = sorted(data["faces"], key=lambda f: f["source"])
        return np.array([[f["probabilities"][c] for c in classes] for f in faces])

    p_plain, p_mirror = probs("--checkpoint", ckpt, plain_dir, "none"), probs("--checkpoint", ckpt, mirror, "none")
    p_tta = probs("--checkpoint", ckpt, plain_dir, "hflip")
    np.testing.assert_allclose(p_tta, (p_plain + p_mirror) / 2, atol=1e-5)
    assert np.abs(p_tta - p_plain).max() > 1e-4
    np.testing.assert_allclose(probs("--onnx", onnx_file, plain_dir, "hflip"), p_tta, atol=1e-4)
    # --tta crops: PyTorch and ONNX (NumPy views) agree, and it differs from flip TTA
    p_crops = probs("--checkpoint", ckpt, plain_dir, "crops")
    np.testing.assert_allclose(probs("--onnx", onnx_file, plain_dir, "crops"), p_crops, atol=1e-4)
    assert np.abs(p_crops - p_tta).max() > 1e-4
    rc, out, err = run(["predict", "--checkpoint", ckpt, "--crops", plain_dir, "--tta", "vflip"], capsys)
    assert rc != 0 and "vflip" in out + err
