"""Fixtures for the inference tests: a small real checkpoint and composite photos built from real faces."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fairexpr.labels import CANONICAL7
from inference_helpers import center_inside, composite  # noqa: F401  (used by fixtures below)

FACE_SIZE = 200


def make_checkpoint(run_dir: Path, seed: int = 0) -> Path:
    """resnet18 (small-input stem, 1 channel, 48x48) saved with a full sidecar."""
    import torch

    from fairexpr.checkpoint import save_model
    from fairexpr.models import create_model

    torch.manual_seed(seed)
    model = create_model("resnet18", num_classes=7, small_input=True, in_chans=1).eval()
    with torch.no_grad():  # non-degenerate BN statistics so outputs differ between faces
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.normal_(0, 0.1)
    side = {"model": {"name": "resnet18", "num_classes": 7, "kwargs": {"small_input": True, "in_chans": 1}},
            "classes": list(CANONICAL7),
            "preprocess": {"input_size": [48, 48], "in_chans": 1, "mean": [0.5], "std": [0.25]}}
    save_model(run_dir, model, side)
    return run_dir


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="session")
def onnx_file(ckpt, tmp_path_factory) -> Path:
    from fairexpr.checkpoint import load_model
    from fairexpr.inference.export import export_onnx

    model, side = load_model(ckpt)
    return export_onnx(model, side, tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="session")
def utk_paths(real_data) -> list[Path]:
    root = real_data / "utkface" / "crop_part1"
    if not root.is_dir():
        pytest.skip(f"{root} missing")
    return sorted(root.glob("*.jpg"))[:40]


@pytest.fixture(scope="session")
def ck_dir(real_data) -> Path:
    root = real_data / "ckplus" / "CK+48"
    if not root.is_dir():
        pytest.skip(f"{root} missing")
    return root


@pytest.fixture(scope="session")
def haar_faces(utk_paths) -> list[np.ndarray]:
    """Real UTKFace crops on which the Haar cascade finds exactly one face (so composites are well-posed)."""
    from fairexpr.inference.detect import HaarDetector

    det = HaarDetector()
    out = []
    for p in utk_paths:
        img = np.asarray(Image.open(p).convert("RGB"))
        pad = cv2.copyMakeBorder(img, 60, 60, 60, 60, cv2.BORDER_CONSTANT, value=(235, 235, 235))
        if len(det.detect(pad)) == 1:
            out.append(img)
        if len(out) == 4:
            break
    assert len(out) >= 4, "expected Haar to find faces in real UTKFace crops"
    return out



@pytest.fixture(scope="session")
def group_photo(haar_faces) -> tuple[np.ndarray, list]:
    """Three large faces and one small face (70 px) on one canvas."""
    return composite(haar_faces[:4], [200, 180, 220, 70])


@pytest.fixture(scope="session")
def group_photo_file(group_photo, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("photos") / "group.jpg"
    Image.fromarray(group_photo[0]).save(p, quality=95)
    return p


