"""train.select_metric=last keeps the end of the schedule (validation still logged) and train.batchnorm=frozen
keeps a network's BatchNorm statistics through a whole training run; both recorded; bad combinations refused."""
from __future__ import annotations

import csv
import json

import pytest
from safetensors.torch import load_file

from fairexpr.config import ConfigError
from fairexpr.engine import fit


def test_select_last_keeps_the_last_epoch_and_logs_validation(cfg_factory, tmp_path):
    cfg = cfg_factory(train={"epochs": 3, "batch_size": 32, "select_metric": "last", "calibrate": False},
                      optim={"name": "sgd", "lr": 0.5})  # a large lr: the validation metric moves between epochs
    out = tmp_path / "run"
    fit(cfg, out)
    result = json.loads((out / "result.json").read_text())
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and all(r["val_balanced_accuracy"] for r in rows)
    assert result["best_epoch"] == 3
    assert result["best"] == pytest.approx(float(rows[-1]["val_balanced_accuracy"]))
    # the kept model is the last one: identical to the last-epoch checkpoint's weights
    kept, last = load_file(str(out / "model.safetensors")), load_file(str(out / "last.safetensors"))
    for k, v in kept.items():  # the training state stores the network under method/model.
        assert (last[f"method/model.{k}"].to(v.dtype) == v).all(), k


def test_select_last_with_early_stopping_is_refused(cfg_factory):
    with pytest.raises(ConfigError, match="early_stop_patience.*select_metric=last"):
        cfg_factory(train={"select_metric": "last", "early_stop_patience": 2})
    with pytest.raises(ConfigError, match="train.select_metric.*last"):
        cfg_factory(train={"select_metric": "newest"})


def test_frozen_batchnorm_through_a_training_run(cfg_factory, tmp_path):
    from fairexpr.checkpoint import load_model

    src = tmp_path / "src"
    fit(cfg_factory(train={"epochs": 1, "batch_size": 32, "calibrate": False}), src)
    before = {k: v for k, v in load_file(str(src / "model.safetensors")).items() if k.endswith(("running_mean", "running_var"))}
    assert before
    cfg = cfg_factory(model={"name": "resnet18", "kwargs": {"small_input": False}, "init": str(src), "pretrained": None},
                      train={"epochs": 1, "batch_size": 32, "batchnorm": "frozen", "calibrate": False},
                      optim={"name": "sgd", "lr": 0.002})  # fixed statistics: a small lr, as for any converged start
    out = tmp_path / "run"
    fit(cfg, out)
    result = json.loads((out / "result.json").read_text())
    # ResNet-18: 20 BatchNorm2d layers, all loaded from the source run
    assert result["batchnorm"] == {"mode": "frozen", "frozen_layers": 20, "training_layers": 0}
    after = load_file(str(out / "model.safetensors"))
    for k, v in before.items():
        assert (after[k] == v).all(), k
    # the weights (and the BatchNorm affine parameters) did train
    src_state = load_file(str(src / "model.safetensors"))
    assert not (after["conv1.weight"] == src_state["conv1.weight"]).all()
    assert not (after["bn1.weight"] == src_state["bn1.weight"]).all()
    load_model(out)  # and the run is a loadable model


def test_frozen_batchnorm_with_nothing_loaded_is_an_error(cfg_factory, tmp_path):
    """An option that would do nothing is an error: a network trained from scratch has only initial statistics."""
    cfg = cfg_factory(train={"epochs": 1, "batch_size": 32, "batchnorm": "frozen"})
    with pytest.raises(ConfigError, match=r"train.batchnorm=frozen: nothing to freeze in resnet18: its 20 BatchNorm "
                                          r"layer\(s\) all still have their initial statistics"):
        fit(cfg, tmp_path / "run")
