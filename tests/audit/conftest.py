"""A hand-built ``folder`` dataset with known problems (every expected number is counted by hand below)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fairexpr.data.synthetic import write_folder

TRAIN = [4, 2, 3, 5, 3, 3, 4]  # anger, disgust, fear, happiness, sadness, surprise, neutral (generated)
TEST = [2] * 7


def first(root: Path, split: str, cls: str) -> Path:
    return sorted((root / split / cls).glob("*.png"))[0]


def build_messy(root: Path) -> dict[str, Path]:
    write_folder(root, {"train": TRAIN, "test": TEST}, size=16, seed=4)
    p: dict[str, Path] = {}
    # 1. a train image copied into test with the same label (leak)
    p["leak_same"] = root / "test" / "anger" / "leak_same.png"
    shutil.copy(first(root, "train", "anger"), p["leak_same"])
    # 2. a train happiness image copied into test/sadness (leak with a conflicting label)
    p["leak_conflict"] = root / "test" / "sadness" / "leak_conflict.png"
    shutil.copy(first(root, "train", "happiness"), p["leak_conflict"])
    # 3. a within-train duplicate (same label)
    p["dup_within"] = root / "train" / "fear" / "dup_within.png"
    shutil.copy(first(root, "train", "fear"), p["dup_within"])
    # 4. the same pixels stored as BMP (a decoded-pixel duplicate across formats)
    p["dup_bmp"] = root / "train" / "neutral" / "dup_bmp.bmp"
    Image.open(first(root, "train", "neutral")).save(p["dup_bmp"])
    # 5. a blank train image and a near-blank test image (std ~0.06)
    p["blank"] = root / "train" / "neutral" / "blank.png"
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(p["blank"])
    nb = np.full((16, 16), 100, np.uint8)
    nb[0, 0] = 101
    p["near_blank"] = root / "test" / "surprise" / "near_blank.png"
    Image.fromarray(nb).save(p["near_blank"])
    # 6. a corrupt file with an image extension
    p["corrupt"] = root / "test" / "fear" / "corrupt.png"
    p["corrupt"].write_bytes(b"this is not a PNG file at all")
    # 7. an RGB image of another size
    p["rgb"] = root / "train" / "sadness" / "rgb.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(p["rgb"])
    p["src_anger"] = first(root, "train", "anger")
    p["src_happiness"] = first(root, "train", "happiness")
    return p


@pytest.fixture(scope="session")
def messy(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("messy")
    return root, build_messy(root)
