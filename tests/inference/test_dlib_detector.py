"""dlib's HOG detector + 5-point landmarks (`--detector dlib`, the `auto` default when fairexpr[faces] is
installed): finds real faces that are turned in-plane, gives eye landmarks, no false boxes on a plain canvas."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from fairexpr.data.base import DataError
from fairexpr.inference import detect as D

pytestmark = pytest.mark.skipif(not D.dlib_available(), reason="dlib-bin / face_recognition_models not installed "
                                                               "(pip install 'fairexpr[faces]'; make test installs them)")


def rotated(img: np.ndarray, angle: float) -> np.ndarray:
    pad = cv2.copyMakeBorder(img, 100, 100, 100, 100, cv2.BORDER_CONSTANT, value=(235, 235, 235))
    m = cv2.getRotationMatrix2D((pad.shape[1] / 2, pad.shape[0] / 2), angle, 1.0)
    return cv2.warpAffine(pad, m, (pad.shape[1], pad.shape[0]), borderMode=cv2.BORDER_CONSTANT, borderValue=(235, 235, 235))


def test_turned_faces_are_found_where_haar_misses_them(utk_paths):
    dl, haar = D.create_detector("dlib"), D.create_detector("haar")
    found = {"dlib": 0, "haar": 0}
    extra = {"dlib": 0, "haar": 0}
    paths = utk_paths[:20]
    for p in paths:
        im = rotated(np.asarray(Image.open(p).convert("RGB")), 25)
        c = (im.shape[1] / 2, im.shape[0] / 2)
        for name, det in (("dlib", dl), ("haar", haar)):
            faces = det.detect(im)
            hit = [f for f in faces if f.box[0] <= c[0] <= f.box[0] + f.box[2] and f.box[1] <= c[1] <= f.box[1] + f.box[3]]
            found[name] += bool(hit)
            extra[name] += len(faces) - min(1, len(hit))
    assert found["dlib"] >= 0.85 * len(paths), found
    assert found["dlib"] > found["haar"] and extra["dlib"] == 0, (found, extra)


def test_landmarks_are_the_eyes_image_left_first(utk_paths):
    det = D.DlibDetector()
    img = np.asarray(Image.open(utk_paths[0]).convert("RGB"))
    faces = det.detect(rotated(img, 0))
    assert len(faces) == 1
    f = faces[0]
    x, y, w, h = f.box
    assert f.landmarks.shape == (2, 2) and f.landmarks[0, 0] < f.landmarks[1, 0]
    for ex, ey in f.landmarks:
        assert x <= ex <= x + w and y <= ey <= y + h * 0.7  # eyes in the upper part of the box
    # aligned by the eyes: in the crop both eyes sit on the template's row, left of / right of centre
    from fairexpr.inference.align import align_face, template

    crop = align_face(rotated(img, 20), D.DlibDetector().detect(rotated(img, 20))[0], 96, 0.1)
    assert crop.shape == (96, 96, 3) and template(2, (96, 96), 0.1)[0, 1] == pytest.approx(96 * 0.48 / 1.2, rel=1e-3)


def test_auto_picks_dlib_when_installed_and_falls_back(monkeypatch):
    assert D.resolve_detector_name("auto") == "dlib" and isinstance(D.create_detector(), D.DlibDetector)
    monkeypatch.setattr(D, "dlib_available", lambda: False)
    assert D.resolve_detector_name("auto") == "haar" and isinstance(D.create_detector("auto"), D.HaarDetector)


def test_missing_model_package_is_a_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "face_recognition_models" else real(n, *a))
    with pytest.raises(DataError, match=r"pip install 'fairexpr\[faces\]'"):
        D.DlibDetector()
