"""The engine end to end on tiny synthetic data: training really happens, checkpoints round-trip,
resume after a kill reproduces the uninterrupted run, and errors are clear."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fairexpr.config import ConfigError
from fairexpr.engine import fit, load_model
from fairexpr.checkpoint import CheckpointError, load_tensors


def test_fit_trains_evaluates_and_checkpoints(cfg_factory, tmp_path):
    cfg = cfg_factory(train={"epochs": 3})
    res = fit(cfg, tmp_path / "run")
    hist = res["history"]
    assert len(hist) == 3
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]  # something was learned
    test = res["eval"]["test"]
    assert test["n"] == sum(test["n_per_class"].values())
    assert 0 <= test["balanced_accuracy"] <= 1
    assert res["best_epoch"] in (1, 2, 3)
    run = tmp_path / "run"
    for f in ("model.safetensors", "model.json", "last.safetensors", "last.json", "metrics.csv", "config.yaml",
              "eval/test/metrics.json", "eval/test/predictions.npz", "eval/test/confusion_matrix.png"):
        assert (run / f).exists(), f
    side = json.loads((run / "model.json").read_text())
    assert side["classes"] == ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
    assert side["preprocess"]["input_size"] == [32, 32] and side["preprocess"]["in_chans"] == 1
    # the checkpoint round-trips bit-exactly: reloaded predictions equal the stored ones
    model, _ = load_model(run)
    pred = np.load(run / "eval/test/predictions.npz")
    assert pred["probs"].shape == (test["n"], 7)
    w = load_tensors(run / "model.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, w[k]), k


def test_existing_run_needs_resume_flag(cfg_factory, tmp_path):
    cfg = cfg_factory(train={"epochs": 1})
    fit(cfg, tmp_path / "run")
    with pytest.raises(ConfigError, match="--resume"):
        fit(cfg, tmp_path / "run")


def _train_args(out: Path, epochs: int, resume: bool = False) -> list[str]:
    """``fairexpr train`` arguments of the resume test: 16x16 synthetic faces, 420 train / 140 val images."""
    args = ["train", "--out", str(out), "--no-progress",
            "data.train=synthetic:fer2013", "data.train_options={total: 420, seed: 2}",
            "data.val=synthetic:fer2013", "data.val_split=val", "data.val_options={total: 140, seed: 2}",
            "data.image_size=16", "model.kwargs={small_input: false}", f"train.epochs={epochs}",
            "train.batch_size=32", "optim.lr=0.05"]
    return args + (["--resume"] if resume else [])


def _train_cmd(out: Path, epochs: int, resume: bool = False) -> list[str]:
    return [sys.executable, "-m", "fairexpr.cli", *_train_args(out, epochs, resume)]


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from fairexpr.cli import cli as cli_main

    env = dict(os.environ, FAIREXPR_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    monkeypatch.setenv("FAIREXPR_CACHE", str(tmp_path / "cache"))
    epochs = 4
    # the uninterrupted reference runs the same CLI command in this process (one interpreter start fewer),
    # on one thread like the subprocesses below so the arithmetic is the same
    torch.set_num_threads(1)
    ref = CliRunner().invoke(cli_main, _train_args(tmp_path / "full", epochs))
    assert ref.exit_code == 0, ref.output
    # start the same run, SIGKILL it after its second epoch checkpoint, then resume
    p = subprocess.Popen(_train_cmd(tmp_path / "killed", epochs), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = tmp_path / "killed" / "last.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        if last.exists():
            try:
                if json.loads(last.read_text())["state"]["epoch"] >= 2:
                    break
            except (json.JSONDecodeError, KeyError):
                pass
        if p.poll() is not None:
            pytest.fail(f"training exited early: {p.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    state = json.loads(last.read_text())["state"]
    assert 2 <= state["epoch"] < epochs, "the kill must land mid-run"
    subprocess.run(_train_cmd(tmp_path / "killed", epochs, resume=True), check=True, env=env, capture_output=True)
    a = load_tensors(tmp_path / "full" / "last.safetensors")
    b = load_tensors(tmp_path / "killed" / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    ra = json.loads((tmp_path / "full" / "result.json").read_text())
    rb = json.loads((tmp_path / "killed" / "result.json").read_text())
    assert ra["eval"]["val"]["accuracy"] == rb["eval"]["val"]["accuracy"]


def test_corrupt_training_state_is_a_clear_error(cfg_factory, tmp_path):
    cfg = cfg_factory(train={"epochs": 1})
    fit(cfg, tmp_path / "run")
    (tmp_path / "run" / "last.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="last.safetensors"):
        fit(cfg, tmp_path / "run", resume=True)


def test_pickled_checkpoint_is_refused(tmp_path):
    from fairexpr.checkpoint import load_tensors

    p = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(2)}, p)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_tensors(p)


def test_bad_config_keys_and_paths(cfg_factory, tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        cfg_factory(train={"epoch": 3})
    cfg = cfg_factory(data={"train": "fer2013:/nonexistent/fer"})
    from fairexpr.data import DataError

    with pytest.raises(DataError, match="/nonexistent/fer"):
        fit(cfg, tmp_path / "run")
    cfg = cfg_factory(method={"name": "supervised", "bogus": 1})
    with pytest.raises(ConfigError, match="method.bogus"):
        fit(cfg, tmp_path / "run2")
    cfg = cfg_factory(model={"name": "resnet1800"})
    from fairexpr.models import ModelError

    with pytest.raises(ModelError, match="resnet1800"):
        fit(cfg, tmp_path / "run3")


@pytest.mark.parametrize("loss,kwargs,sampler,head", [
    ("weighted_ce", {}, "random", "linear"),
    ("ldam", {"max_m": 0.5, "s": 30.0, "drw_epoch": 1}, "random", "normed"),
    ("ce", {}, "class_balanced", "linear"),
    ("focal", {"gamma": 2.0}, "sqrt", "linear"),
])
def test_imbalance_baselines_train(cfg_factory, tmp_path, loss, kwargs, sampler, head):
    cfg = cfg_factory(loss={"name": loss, "kwargs": kwargs}, sampler={"name": sampler},
                      model={"kwargs": {"head": head}})
    res = fit(cfg, tmp_path / "run")
    assert np.isfinite(res["history"][-1]["train_loss"])
    if loss == "ldam":  # DRW switched on at epoch index 1
        assert [r["loss_reweighted"] for r in res["history"]] == [0, 1]
