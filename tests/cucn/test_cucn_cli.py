"""`fairexpr train --config configs/cucn_cpu.yaml` end to end on tiny synthetic data, and the rebuilt checkpoint."""
import json
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner

from fairexpr.cli import cli
from fairexpr.config import load_config
from fairexpr.data.augment import normalize, to_float
from fairexpr.engine import load_model
from fairexpr.engine.data import build_splits
from fairexpr.models.heads import UncertaintyHead

ROOT = Path(__file__).resolve().parents[2]


def test_cucn_recipe_trains_from_cli_and_checkpoint_rebuilds(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIREXPR_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    args = ["train", "--config", str(ROOT / "configs" / "cucn_cpu.yaml"), "--out", str(run), "--no-progress",
            "data.train=synthetic:fer2013", "data.train_options={total: 420, seed: 1}",
            "data.val=synthetic:fer2013", "data.val_split=val", "data.val_options={total: 140, seed: 1}",
            "data.test=synthetic:fer2013", "data.test_split=test", "data.test_options={total: 140, seed: 1}",
            "data.image_size=32", "model.kwargs={small_input: false}", "train.epochs=1", "train.batch_size=32",
            "train.max_minutes=null"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    side = json.loads((run / "model.json").read_text())
    assert side["method"] == "cucn" and side["model"]["name"] == "cbam_resnet18"
    assert side["model"]["kwargs"]["head"] == "uncertainty"
    assert side["model"]["kwargs"]["head_kwargs"] == {"feat_dim": 64, "drop_rate": 0.4}
    hist = (run / "metrics.csv").read_text().splitlines()
    header = hist[0].split(",")
    assert "train_mix_weight_dev" in header and len(hist) == 2
    row = dict(zip(header, hist[1].split(",")))
    assert np.isfinite(float(row["train_loss"]))
    # the engine's param groups: classifier at optim.lr * head_lr_mult (5x), the rest at optim.lr
    last = json.loads((run / "last.json").read_text())
    lrs = sorted(g["base_lr"] for g in last["optimizers"][0]["param_groups"])
    assert lrs == [1e-3, 5e-3]

    model, _ = load_model(run)
    assert isinstance(model.get_classifier(), UncertaintyHead)
    metrics = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    test_split = build_splits(load_config(run / "config.yaml"), progress=False)["test"]
    assert metrics["n"] == len(test_split) and set(metrics["per_class_accuracy"]) == set(side["classes"])
    pred = np.load(run / "eval" / "test" / "predictions.npz")
    assert pred["embeddings"].shape == (len(test_split), 64)  # the embedding is μ, not the 512-d pooled feature
    # the rebuilt μ-only network reproduces the engine's stored test logits
    mean, std = side["preprocess"]["mean"], side["preprocess"]["std"]
    x = normalize(to_float(test_split.images), mean, std)
    with torch.no_grad():
        logits = model(x).numpy()
    np.testing.assert_array_equal(pred["y_true"], test_split.labels.numpy())
    np.testing.assert_allclose(logits, pred["logits"], rtol=1e-4, atol=1e-4)
