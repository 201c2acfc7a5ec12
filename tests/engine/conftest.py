import pytest


def tiny_config(**over):
    """A config that trains in seconds: small synthetic faces, small batch, 2 epochs."""
    from fairexpr.config import _merge_free, load_config

    base = {
        "seed": 0,
        "data": {"train": "synthetic:fer2013", "train_split": "train", "train_options": {"total": 420, "seed": 1},
                 "val": "synthetic:fer2013", "val_split": "val", "val_options": {"total": 420, "seed": 1},
                 "test": "synthetic:fer2013", "test_split": "test", "test_options": {"total": 420, "seed": 1},
                 "image_size": 32, "channels": 1},
        "model": {"name": "resnet18", "kwargs": {"small_input": False}},
        "optim": {"name": "sgd", "lr": 0.05},
        "train": {"epochs": 2, "batch_size": 32, "progress": False, "eval_batch_size": 128},
    }
    return load_config(None, extra=_merge_free(base, over))


@pytest.fixture
def cfg_factory(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIREXPR_CACHE", str(tmp_path / "cache"))
    return tiny_config
