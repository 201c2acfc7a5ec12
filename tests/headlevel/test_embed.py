"""`fairexpr embed`: cached backbone embeddings, consistent with `eval`, every exclusion counted, bad input one line."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fairexpr.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))
from zoo_helpers import tiny_checkpoint  # noqa: E402


def run(argv, capsys):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture()
def ckpt(tmp_path):
    return tiny_checkpoint(tmp_path / "run")


@pytest.fixture()
def manifest(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(f"f{i}.png", lab, "test") for i, lab in enumerate(["happy", "sad", "angry", "fear", "surprise", "neutral",
                                                                 "disgust", "happy", "sad", "contempt", ""])]
    for name, _, _ in rows:
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(tmp_path / name)
    m = tmp_path / "m.csv"
    with open(m, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerows(rows)
    return m


def test_embed_checkpoint_matches_eval_and_counts_exclusions(ckpt, manifest, tmp_path, capsys):
    from fairexpr.engine.embed import load_embeddings

    out = tmp_path / "e.npz"
    rc, o, e = run(["embed", "--checkpoint", ckpt, "--data", f"csv:{manifest}", "--split", "test", "--out", out, "--json"], capsys)
    assert rc == 0, e
    rep = json.loads(o)
    assert rep["n"] == 9 and rep["dim"] == 512 and rep["has_logits"] and not rep["has_soft_labels"]
    assert rep["exclusions"]["by_reason"] == {"class 'contempt' is not one of the model's classes": 1, "no label": 1}
    emb = load_embeddings(out)
    assert emb.features.shape == (9, 512) and emb.logits.shape == (9, 7) and emb.meta["source"]["kind"] == "checkpoint"
    # the same faces through `eval`: identical labels, and the stored logits give eval's accuracy
    rc, o, e = run(["eval", "--checkpoint", ckpt, "--data", f"csv:{manifest}", "--split", "test", "--out", tmp_path / "ev",
                    "--json"], capsys)
    m = json.loads(o)
    assert m["n"] == 9
    assert float((emb.logits.argmax(1) == emb.labels).mean()) == pytest.approx(m["accuracy"])
    # the logits are the model's head applied to the stored features
    import torch

    from fairexpr.checkpoint import load_model

    model, _ = load_model(ckpt)
    with torch.no_grad():
        z = model.forward_head(torch.as_tensor(emb.features)).numpy()
    np.testing.assert_allclose(z, emb.logits, atol=1e-4)


def test_embed_a_bare_backbone(manifest, tmp_path, capsys):
    from fairexpr.engine.embed import load_embeddings

    out = tmp_path / "b.npz"
    rc, o, e = run(["embed", "--model", "resnet18", "--model-option", "small_input=true", "--image-size", "48",
                    "--data", f"csv:{manifest}", "--split", "test", "--out", out, "--no-progress"], capsys)
    assert rc == 0, e
    assert "9 faces x 512 features" in o and "excluded 2 image(s)" in o and e == ""
    emb = load_embeddings(out)
    assert emb.logits is None and emb.meta["source"] == {"kind": "backbone", "model": {
        "name": "resnet18", "pretrained": None, "kwargs": {"small_input": True}}}


@pytest.mark.parametrize("argv, msg", [
    (["--pretrained", "dlib"], "--pretrained is only used with --model"),
    (["--model", "resnet18"], "--model needs --image-size"),
    (["--model", "resnet18", "--image-size", "48", "--checkpoint", "default"], "not both"),
])
def test_embed_flag_errors(argv, msg, manifest, tmp_path, capsys):
    rc, _, err = run(["embed", *argv, "--data", f"csv:{manifest}", "--split", "test", "--out", tmp_path / "x.npz"], capsys)
    assert rc == 2 and msg in err and "Traceback" not in err
    rc, _, err = run(["embed", "--data", f"csv:{manifest}", "--split", "test", "--out", tmp_path / "x.txt"], capsys)
    assert rc == 2 and "must end in .npz" in err and "Traceback" not in err


def test_embed_refuses_pooled_splits(ckpt, tmp_path, capsys):
    rng = np.random.default_rng(1)
    m = tmp_path / "two.csv"
    rows = [("a.png", "happy", "train"), ("b.png", "sad", "test")]
    for n, _, _ in rows:
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(tmp_path / n)
    with open(m, "w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "split"], *rows])
    rc, _, err = run(["embed", "--checkpoint", ckpt, "--data", f"csv:{m}", "--out", tmp_path / "x.npz"], capsys)
    assert rc == 2 and "has splits test, train; give one" in err


def test_load_embeddings_errors(tmp_path):
    from fairexpr.engine.embed import Embeddings, EmbeddingsError, load_embeddings, save_embeddings

    with pytest.raises(EmbeddingsError, match="no such embeddings file"):
        load_embeddings(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(EmbeddingsError, match="not an embeddings .npz"):
        load_embeddings(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(EmbeddingsError, match="missing features, labels, meta"):
        load_embeddings(tmp_path / "other.npz")
    with pytest.raises(EmbeddingsError, match="labels must be"):
        Embeddings(np.zeros((3, 4)), np.zeros(2, np.int64), ("a", "b"))
    with pytest.raises(EmbeddingsError, match="class indices"):
        Embeddings(np.zeros((2, 4)), np.array([0, 2]), ("a", "b"))
    e = Embeddings(np.ones((2, 4)), np.array([0, 1]), ("a", "b"), logits=np.zeros((2, 2)), meta={"x": 1})
    p = save_embeddings(e, tmp_path / "ok.npz")
    back = load_embeddings(p)
    assert back.meta["x"] == 1 and back.classes == ("a", "b") and back.soft_labels is None
    np.testing.assert_array_equal(back.features, e.features)
