"""``train.iters_per_epoch``: fixed-length epochs (Transfer-Learning-Library's --iters-per-epoch), shorter or
longer than one pass over the training split, and a clear error for bad values."""
from __future__ import annotations

import json

import pytest

from fairexpr.config import ConfigError
from fairexpr.engine import fit
from fairexpr.engine import loop as loop_mod


@pytest.mark.parametrize("iters", [3, 20])  # 420 synthetic faces (~ 300 train) / 32 = 9 steps per pass
def test_iters_per_epoch_sets_the_steps_of_every_epoch(cfg_factory, tmp_path, monkeypatch, iters):
    seen = []
    real = loop_mod.epoch_indices

    def spy(n, *a, **k):
        out = real(n, *a, **k)
        seen.append((len(out), n))
        return out

    monkeypatch.setattr(loop_mod, "epoch_indices", spy)
    cfg = cfg_factory(train={"epochs": 2, "batch_size": 32, "iters_per_epoch": iters}, data={"val": None})
    fit(cfg, tmp_path / "run")
    state = json.loads((tmp_path / "run" / "last.json").read_text())
    assert state["state"]["step"] == 2 * iters
    n = seen[0][1]
    # a longer epoch draws the sampler's order again (a fresh permutation), as often as needed
    per_epoch = -(-(iters * 32) // n)  # ceil
    assert len(seen) == 1 + 2 * per_epoch  # + the engine's sampler check before training


def test_iters_per_epoch_must_be_a_positive_integer(cfg_factory):
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ConfigError, match="train.iters_per_epoch"):
            cfg_factory(train={"iters_per_epoch": bad})


def test_composed_split_strings_work_in_configs(cfg_factory):
    """``data.*_split`` takes the composed split strings of fairexpr.data.splits (``train/frac0.5``, ``.../val0.2``)."""
    from fairexpr.engine.data import build_splits

    full = build_splits(cfg_factory(data={"val": None, "test": None}), progress=False)["train"]
    half = build_splits(cfg_factory(data={"val": None, "test": None, "train_split": "train/frac0.5"}),
                        progress=False)["train"]
    counts_full, counts_half = full.class_counts(), half.class_counts()
    assert all(abs(h - round(f * 0.5)) <= 1 for f, h in zip(counts_full, counts_half)), (counts_full, counts_half)
    with pytest.raises(Exception, match="frac"):
        build_splits(cfg_factory(data={"val": None, "test": None, "train_split": "train/frac1.5"}), progress=False)
