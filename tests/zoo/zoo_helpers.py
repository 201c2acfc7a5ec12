"""Helpers of the zoo tests (a module with a unique name, importable from other test folders)."""
from __future__ import annotations

from pathlib import Path

from fairexpr.labels import CANONICAL7


def tiny_checkpoint(run_dir: Path, fp16: bool = False) -> Path:
    import torch

    from fairexpr.checkpoint import atomic_save_tensors, save_model
    from fairexpr.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=7, small_input=True, in_chans=1).eval()
    side = {"model": {"name": "resnet18", "num_classes": 7, "kwargs": {"small_input": True, "in_chans": 1}},
            "classes": list(CANONICAL7), "temperature": 0.5,
            "preprocess": {"input_size": [48, 48], "in_chans": 1, "mean": [0.5], "std": [0.25]}}
    save_model(run_dir, model, side)
    if fp16:
        atomic_save_tensors(run_dir / "model.safetensors",
                            {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    return run_dir
