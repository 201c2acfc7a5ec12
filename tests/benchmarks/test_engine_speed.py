"""Helpers of benchmarks/engine_speed.py: recipe specs with overrides, and the compute-only ceiling in every
precision/format variant on a tiny model (that it trains: the weights move)."""
from __future__ import annotations

import sys

import torch
from _bench import load_bench
from torch import nn


def _load():
    return load_bench("engine_speed")


def test_split_recipe():
    es = _load()
    assert es.split_recipe("configs/a.yaml") == ("configs/a.yaml", [])
    assert es.split_recipe("configs/a.yaml@model.kwargs.small_input=false,train.batch_size=64") == (
        "configs/a.yaml", ["model.kwargs.small_input=false", "train.batch_size=64"])


def test_ceiling_every_variant_runs_and_steps():
    es = _load()
    built: list[nn.Module] = []

    def build():
        torch.manual_seed(0)
        m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 7))
        built.append(m)
        return m

    for prec, fmt in es.VARIANTS:
        rate = es.ceiling(build, 1, 16, 8, 2, prec, fmt)
        assert rate > 0
        m = built[-1]
        assert not torch.equal(m[0].weight.detach().contiguous(), build()[0].weight.detach()), (prec, fmt)


def test_isolated_measurement_runs_in_a_fresh_process_with_the_thread_count(monkeypatch):
    """Each figure comes from its own process with OMP_NUM_THREADS = the thread count (as the recipes are run)."""
    es = _load()
    monkeypatch.setenv("FAIREXPR_DATA", "/nonexistent")  # the recipe names its data; a ceiling never reads it
    out = es.isolated({"kind": "ceiling", "recipe": "configs/baseline_ce_cpu.yaml@train.batch_size=4,data.image_size=32",
                       "threads": 1, "steps": 1, "precision": "fp32", "format": "channels_last", "manifest": "", "tmp": "",
                       "images": 0})
    assert out["images_per_s"] > 0 and out["torch_threads"] == 1 and out["omp_num_threads"] == "1"


def test_ceiling_under_either_allocator_and_the_variant_filter(monkeypatch):
    """The ceiling runs with glibc malloc tuned (as the engine's train.allocator=auto) or with its defaults; --variants
    keeps the named ceiling variants only."""
    es = _load()
    applied = []
    import fairexpr.engine.allocator as al

    monkeypatch.setattr(al, "configure_allocator", lambda mode, device_type="cpu": applied.append(mode) or mode)

    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 7))

    assert es.ceiling(build, 1, 16, 8, 1, "fp32", "channels_last") > 0
    assert es.ceiling(build, 1, 16, 8, 1, "fp32", "channels_last", "system") > 0
    assert applied == ["tuned", "system"]
    import pytest

    with pytest.raises(SystemExit):  # argparse refuses an unknown variant name
        monkeypatch.setattr(sys, "argv", ["engine_speed.py", "--variants", "fp16_channels_last"])
        es.main()
