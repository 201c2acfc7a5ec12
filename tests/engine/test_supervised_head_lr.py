"""``optim.head_lr_mult`` under the plain supervised method: the classifier in its own parameter group at
``optim.lr * head_lr_mult``, everything else at ``optim.lr``; one group (the recipes' behaviour) without it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fairexpr.cli import cli
from fairexpr.config import ConfigError
from fairexpr.methods import get_method
from fairexpr.methods.base import DataInfo

CLASSES = ["a", "b", "c"]


def _make(mult: float | None, name: str = "dlib_resnet29", **kw):
    cfg = {"model": {"name": name, "pretrained": None, "kwargs": {"feature_stage": 3, "head": "normed", **kw}},
           "loss": {"name": "ldam", "kwargs": {"s": 30.0}}, "method": {"name": "supervised"},
           "data": {"label_mode": "hard"}}
    if mult is not None:
        cfg["optim"] = {"lr": 1e-4, "head_lr_mult": mult}
    return get_method("supervised")(cfg, DataInfo(classes=CLASSES, class_counts=[5, 3, 2], in_chans=1, image_size=32))


def test_classifier_gets_its_own_group_and_steps_mult_times_as_far():
    m = _make(10.0)
    assert type(m).uses_head_lr_mult
    slow, fast = m.parameter_groups(1e-4)
    assert (slow["name"], fast["name"]) == ("backbone", "head")
    assert slow["lr"] == pytest.approx(1e-4) and fast["lr"] == pytest.approx(1e-3)
    head = m.model.get_classifier()
    assert {id(p) for p in fast["params"]} == {id(p) for p in head.parameters()}
    assert len(slow["params"]) + len(fast["params"]) == len([p for p in m.parameters() if p.requires_grad])
    opt = torch.optim.SGD(m.parameter_groups(1e-4), lr=1e-4)
    before = {id(p): p.detach().clone() for p in m.parameters()}
    for p in m.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    step = {id(p): (p.detach() - before[id(p)]).abs().max().item() for p in m.parameters()}
    assert step[id(next(head.parameters()))] == pytest.approx(1e-3, rel=1e-3)
    assert step[id(slow["params"][0])] == pytest.approx(1e-4, rel=1e-3)


def test_without_the_option_one_group():
    for mult in (None, 1.0):
        (g,) = _make(mult).parameter_groups(0.01)
        assert g["lr"] == 0.01 and len(g["params"]) == len(list(_make(None).parameters()))


def test_train_cli_records_both_learning_rates(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIREXPR_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    args = ["train", "--config", str(Path(__file__).resolve().parents[2] / "configs" / "ldam_drw_cpu.yaml"),
            "--out", str(run), "--no-progress",
            "data.train=synthetic:fer2013", "data.train_options={total: 210, seed: 1}", "data.train_split=train",
            "data.val=synthetic:fer2013", "data.val_split=val", "data.val_options={total: 70, seed: 1}",
            "data.test=null", "data.image_size=32", "train.epochs=1", "train.batch_size=32",
            "train.max_minutes=null", "optim.lr=0.01", "optim.head_lr_mult=4"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    last = json.loads((run / "last.json").read_text())
    assert sorted(g["base_lr"] for g in last["optimizers"][0]["param_groups"]) == pytest.approx([0.01, 0.04])


def test_a_network_without_a_named_classifier_is_one_clear_error():
    m = _make(3.0)
    m.model.get_classifier = lambda: (_ for _ in ()).throw(RuntimeError("no classifier"))  # type: ignore[assignment]
    with pytest.raises(ConfigError, match=r"optim.head_lr_mult=3.0: model 'dlib_resnet29' does not name its classifier"):
        m.parameter_groups(1e-3)
