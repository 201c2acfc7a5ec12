"""benchmarks/head_level.py end to end at toy size: embeds tiny sets with a tiny checkpoint and a bare backbone,
runs every claim for 3 seeds, writes the JSON and the Markdown table with paired intervals and verdicts."""
from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))
from zoo_helpers import tiny_checkpoint  # noqa: E402


def _load():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("head_level_bench", BENCH / "head_level.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _manifest(d: Path, name: str, n_per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    classes = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    rows = []
    for c, lab in enumerate(classes):
        for i in range(n_per_class if lab != "disgust" else max(2, n_per_class // 4)):
            img = np.clip(rng.normal(40 + 25 * c, 20, (48, 48)), 0, 255).astype(np.uint8)  # class-dependent brightness
            f = d / f"{name}_{lab}_{i}.png"
            Image.fromarray(img).save(f)
            rows.append((str(f), lab, "test"))
    m = d / f"{name}.csv"
    with open(m, "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "label", "split"], *rows])
    return m


def test_head_level_benchmark_at_toy_size(tmp_path, monkeypatch):
    hl = _load()
    ck = tiny_checkpoint(tmp_path / "ck")
    sets = {k: ["--data", f"csv:{_manifest(tmp_path, k, n, i)}", "--split", "test"]
            for i, (k, n) in enumerate({"fer2013_train": 12, "fer2013_private": 6, "ferplus_test": 6, "ckplus48": 6}.items())}
    monkeypatch.setattr(hl, "sets", lambda data: sets)
    monkeypatch.setattr(hl, "BACKBONES", {"default": ["--checkpoint", str(ck)],
                                          "dlib": ["--model", "resnet18", "--model-option", "small_input=true",
                                                   "--image-size", "48"]})
    res = tmp_path / "res" / "head_level"
    monkeypatch.setattr(sys, "argv", ["head_level.py", "--seeds", "3", "--epochs", "2", "--runs", str(tmp_path / "emb"),
                                      "--results", str(res)])
    hl.main()
    rep = json.loads(res.with_suffix(".json").read_text())
    assert [c["id"] for c in rep["claims"]] == [c[0] for c in hl.CLAIMS]
    for c in rep["claims"]:
        for r in c["rows"].values():
            assert r["diff"]["n"] == 3 and len(r["diff"]["ci"]) == 2 and isinstance(r["reproduced"], bool)
    difc = next(c for c in rep["claims"] if c["b"] == "difc")
    assert len(next(iter(difc["rows"].values()))["top3_confusing"]["classes"]) == 3
    md = res.with_suffix(".md").read_text()
    assert "| DI (LDAM-DRW, cosine head) > CE | default | ce → ldam_drw |" in md and "top-3 confusing" in md
    assert len(list((tmp_path / "emb").glob("*.npz"))) == 8  # 4 sets x 2 backbones, each embedded once
    # a second run reuses every embedding (same commands)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "emb").glob("*.npz")}
    hl.main()
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "emb").glob("*.npz")} == before
