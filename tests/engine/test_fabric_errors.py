"""Distribution/accelerator settings the machine cannot honour are one clear line from the CLI, not a Lightning
traceback."""
from __future__ import annotations

import pytest
import torch

from fairexpr.cli import main


@pytest.mark.parametrize("override, expect", [
    ("train.strategy=bogus", "strategy='bogus'"),
    ("train.num_nodes=0", "train.num_nodes' must be a positive integer"),
    ("train.accelerator=quantum", "must be auto|cpu|cuda|gpu|mps|tpu"),
    ("train.precision=fp8", "train.precision"),
])
def test_bad_distribution_settings(override, expect, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FAIREXPR_CACHE", str(tmp_path / "cache"))
    rc = main(["train", "--out", str(tmp_path / "r"), "data.train=synthetic:fer2013", "data.train_options={total: 70}",
               "--no-progress", override])
    err = capsys.readouterr().err
    assert rc == 2 and expect in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("acc", ["cuda", "gpu"])
def test_a_gpu_accelerator_on_a_cpu_machine(acc, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FAIREXPR_CACHE", str(tmp_path / "cache"))
    rc = main(["train", "--out", str(tmp_path / "r"), "data.train=synthetic:fer2013", "data.train_options={total: 70}",
               "--no-progress", f"train.accelerator={acc}"])
    err = capsys.readouterr().err
    assert rc == 2 and f"train.accelerator='{acc}'" in err and "Traceback" not in err, err
