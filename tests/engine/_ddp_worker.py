"""Worker for the distributed test: each process sets the torch.distributed env, registers a BatchNorm-free
test model (BatchNorm statistics are per-process by design, so only a BN-free model can match a
single-process run exactly) and calls the engine with devices=2."""
import os
import sys

import torch
from torch import nn


def register_test_model():
    from fairexpr.models.registry import _REGISTRY, FERModel, register_model

    if "ddp_test_cnn" in _REGISTRY:
        return

    class TinyCNN(FERModel):
        def __init__(self, num_classes=7, in_chans=1, **kw):
            super().__init__()
            self.num_features, self.num_classes = 16, num_classes
            self.pretrained_cfg = {"input_size": (32, 32), "in_chans": in_chans, "mean": [0.5], "std": [0.5]}
            self.body = nn.Sequential(nn.Conv2d(in_chans, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Linear(16, num_classes)

        def forward_features(self, x):
            return self.body(x)

        def forward_head(self, f):
            return self.head(f)

    @register_model("ddp_test_cnn", description="BN-free CNN for the distributed test")
    def ddp_test_cnn(num_classes=7, pretrained=None, in_chans=1, **kw):
        return TinyCNN(num_classes, in_chans)


def config(devices: int):
    from fairexpr.config import load_config

    return load_config(None, extra={
        "seed": 3,
        "data": {"train": "synthetic:fer2013", "train_options": {"total": 420, "seed": 5}, "val": None,
                 "image_size": 32, "channels": 1},
        "model": {"name": "ddp_test_cnn", "kwargs": {}},
        "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "train": {"epochs": 2, "batch_size": 32, "progress": False, "accelerator": "cpu", "devices": devices,
                  "strategy": "ddp" if devices > 1 else "auto"},
    })


def method_config(method: str, world: int, tiny: bool = False):
    """``method``'s own CPU recipe shrunk to 2 steps of a global batch of 16 on synthetic faces
    (tests/engine/test_precision_format.py), on ``world`` CPU processes; ``tiny``: on the BN-free test CNN."""
    from fairexpr.config import _merge_free
    from test_precision_format import method_config as shrunk

    dist = {"accelerator": "cpu", "devices": world, "strategy": "ddp" if world > 1 else "auto"}
    cfg = shrunk(method, sgd=True, **dist)
    if method == "grefel":
        cfg["train"]["batch_size"] = 28
    if tiny:
        cfg = _merge_free(cfg, {"model": {"name": "ddp_test_cnn", "pretrained": None, "kwargs": {}},
                                "method": {"dropout": 0.0}})  # dropout draws differ between 1 and 2 processes
    return cfg


def run(world: int, out: str, rank: int = 0, method: str | None = None, tiny: bool = False) -> None:
    """Train with the engine and save this process's final weights as rank<k>.safetensors (the deployable network
    for the default config; every parameter of the method — all its networks and heads — for ``method``)."""
    register_test_model()
    from fairexpr.checkpoint import atomic_save_tensors
    from fairexpr.engine.loop import Engine

    eng = Engine(config(world) if method is None else method_config(method, world, tiny), out)
    eng.run()
    tensors = eng.method.model.state_dict() if method is None else dict(eng.method.named_parameters())
    atomic_save_tensors(os.path.join(out, f"rank{rank}.safetensors"), tensors)


if __name__ == "__main__":  # pragma: no cover - launched by test_distributed.py
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    method = sys.argv[5] if len(sys.argv) > 5 else None
    tiny = len(sys.argv) > 6 and sys.argv[6] == "tiny"
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")
    torch.set_num_threads(1)
    run(world, out, rank, method, tiny)
