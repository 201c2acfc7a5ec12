"""Helpers of benchmarks/compare_fer.py and benchmarks/_fer_worker.py (no fer environment needed)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


cf = _load("compare_fer")
fw = _load("_fer_worker")


def test_fer_preprocess_scales_to_minus_one_one_at_64():
    faces = np.array([[[0, 255], [51, 204]]], np.uint8)  # 2x2 -> resized to 64x64
    x = fw.preprocess(faces)
    assert x.shape == (1, 64, 64) and x.dtype == np.float32
    # corners keep the source values under bilinear resize: 0 -> -1, 255 -> 1, 51 -> -0.6, 204 -> 0.6
    assert x[0, 0, 0] == pytest.approx(-1.0) and x[0, 0, -1] == pytest.approx(1.0)
    assert x[0, -1, 0] == pytest.approx(-0.6, abs=1e-6) and x[0, -1, -1] == pytest.approx(0.6, abs=1e-6)


def test_match_and_e2e_summary_hand_example():
    truth = [[{"box": [0, 0, 10, 10], "label": 3}, {"box": [20, 0, 10, 10], "label": 0}]]
    # hit face 0 (right label), hit face 0 again (duplicate), miss everything (false positive)
    dets = [[([2, 2, 6, 6], 3), ([1, 1, 8, 8], 3), ([50, 50, 5, 5], 1)]]
    assert cf.match(truth[0], [d[0] for d in dets[0]]) == [0, 0, None]
    s = cf.e2e_summary(truth, dets)
    assert s == {"faces_pasted": 2, "faces_found": 1, "recall": 0.5, "false_or_duplicate_detections": 2,
                 "accuracy_on_found": 1.0}


def test_composite_photos_paste_faces_where_reported():
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, size=(6, 48, 48), dtype=np.uint8)
    labels = np.arange(6)
    photos, truth = cf.composite_photos(faces, labels, n_photos=2, per_photo=4, face_px=96)
    assert photos.shape == (2, 480, 640, 3) and photos.dtype == np.uint8
    for ph, t in zip(photos, truth):
        assert len(t) == 4
        for f in t:
            x, y, w, h = f["box"]
            assert 0 <= x and x + w <= 640 and 0 <= y and y + h <= 480 and w == h == 96
            assert np.array_equal(ph[y:y + h, x:x + w, 0], ph[y:y + h, x:x + w, 2])
        boxes = [f["box"] for f in t]
        for i in range(4):  # pasted faces never overlap
            for j in range(i + 1, 4):
                a, b = boxes[i], boxes[j]
                assert a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1]


pw = _load("_pyemotion_worker")


def test_pyemotion_worker_cli_and_its_batch_path_against_the_package(tmp_path):
    """The worker's sub-commands parse; where the PyEmotion environment exists, its batched scores agree with the
    package's own per-face ``_predict`` (the worker checks that itself and fails otherwise)."""
    import subprocess

    with pytest.raises(SystemExit):
        pw.main(["predict"])  # --faces/--out are required
    env_py = cf.PYEMOTION_PY
    if not env_py.is_file():
        pytest.skip(f"no PyEmotion environment at {env_py} (see benchmarks/_pyemotion_worker.py)")
    faces = np.random.default_rng(0).integers(0, 256, (8, 48, 48), dtype=np.uint8)
    np.save(tmp_path / "f.npy", faces)
    r = subprocess.run([str(env_py), str(BENCH / "_pyemotion_worker.py"), "predict", "--faces", str(tmp_path / "f.npy"),
                        "--out", str(tmp_path / "p.npy")], capture_output=True, text=True, timeout=300,
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    p = np.load(tmp_path / "p.npy")
    assert p.shape == (8, 7) and np.allclose(p.sum(1), 1, atol=1e-5)
