"""GReFEL's face-group batches through the engine: per-image group ids travel with the split, the engine hands
them to the class-balanced sampler, and impossible sampler settings fail before training with a clear error."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fairexpr.config import ConfigError
from fairexpr.engine import fit
from fairexpr.engine import loop as loop_mod
from fairexpr.engine.data import build_splits, group_ids


def test_group_ids_number_groups_in_first_seen_order():
    samples = [SimpleNamespace(subject="S5", sequence="S5_001"), SimpleNamespace(subject="S2", sequence=None),
               SimpleNamespace(subject="S5", sequence="S5_002"), SimpleNamespace(subject=None, sequence="S5_001")]
    g = group_ids(samples)
    assert g["subject"].tolist() == [0, 1, 0, -1] and g["sequence"].tolist() == [0, -1, 1, 0]
    assert group_ids([SimpleNamespace(subject=None, sequence=None)]) == {}


def _grouped_splits(cfg):
    splits = build_splits(cfg, progress=False)
    tr = splits["train"]
    tr.groups = {"subject": np.arange(len(tr)) % 25}
    sub = tr.subset(np.arange(10))
    assert sub.groups["subject"].tolist() == list(range(10))  # subset keeps the ids aligned
    return splits


def test_engine_passes_group_ids_to_the_sampler(cfg_factory, tmp_path, monkeypatch):
    cfg = cfg_factory(sampler={"name": "class_balanced", "kwargs": {"images_per_class": 4, "images_per_group": 2}},
                      train={"epochs": 1, "batch_size": 28})
    seen = []
    real = loop_mod.epoch_indices

    def spy(*a, **k):
        idx = real(*a, **k)
        seen.append((a[5] if len(a) > 5 else k.get("groups"), idx))
        return idx

    monkeypatch.setattr(loop_mod, "epoch_indices", spy)
    splits = _grouped_splits(cfg)
    res = fit(cfg, tmp_path / "run", splits=splits)
    assert res["epochs_run"] == 1 and res["steps"] >= 1
    groups, idx = seen[-1]
    subj, labels = groups["subject"], splits["train"].labels.numpy()
    for b in idx[: res["steps"] * 28].reshape(-1, 28):
        assert np.bincount(labels[b], minlength=7).tolist() == [4] * 7
        for k in range(7):
            assert np.all(np.bincount(subj[b[labels[b] == k]]) % 2 == 0)


def test_missing_groups_and_cut_batches_are_config_errors(cfg_factory, tmp_path):
    cfg = cfg_factory(sampler={"name": "class_balanced", "kwargs": {"images_per_class": 4, "images_per_group": 2}},
                      train={"epochs": 1, "batch_size": 28})
    with pytest.raises(ConfigError, match="no per-image subject ids"):
        fit(cfg, tmp_path / "a")  # synthetic faces carry no subjects
    cfg = cfg_factory(sampler={"name": "class_balanced", "kwargs": {"images_per_class": 4}}, train={"epochs": 1, "batch_size": 32})
    with pytest.raises(ConfigError, match="train.batch_size=28"):
        fit(cfg, tmp_path / "b")
    cfg = cfg_factory(sampler={"name": "class_balanced", "kwargs": {"images_per_class": 3, "images_per_group": 2}},
                      train={"epochs": 1, "batch_size": 21})
    with pytest.raises(ConfigError, match="multiple of images_per_group"):
        fit(cfg, tmp_path / "c", splits=_grouped_splits(cfg))
    cfg = cfg_factory(sampler={"name": "class_balanced", "kwargs": {"images_per_class": 4, "group_by": "subject"}},
                      train={"epochs": 1, "batch_size": 28})
    with pytest.raises(ConfigError, match="no effect without sampler.kwargs.images_per_group"):
        fit(cfg, tmp_path / "d", splits=_grouped_splits(cfg))
    cfg = cfg_factory(sampler={"name": "class_balanced", "kwargs": {"images_per_klass": 4}})
    with pytest.raises(ConfigError, match="sampler.kwargs: .*images_per_klass"):
        fit(cfg, tmp_path / "e")


def test_ckplus_splits_carry_subject_and_sequence_groups(real_data, cfg_factory):
    root = real_data / "ckplus" / "CK+48"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    from fairexpr.config import load_config

    cfg = load_config(None, [f"data.train=ckplus:{root}", "data.train_split=all", "data.val=null", "data.test=null",
                             "data.image_size=48", "data.channels=1"])
    tr = build_splits(cfg, progress=False)["train"]
    assert len(np.unique(tr.groups["subject"])) == 118 and (tr.groups["sequence"] >= 0).all()
