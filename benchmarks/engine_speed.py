"""Training throughput of the fairexpr engine vs a plain PyTorch loop (torchvision-reference style) on the
same model, data and batch size, measured in one run on this machine.

The plain loop is what torchvision's ``references/classification/train.py`` does: an image-folder
dataset decoding JPEGs with PIL, per-image ``transforms.v2`` augmentation in DataLoader workers with
prefetch, SGD. The engine decodes the dataset once (cached), augments whole batches with one
vectorised affine warp, and never syncs the host per step.

    python benchmarks/engine_speed.py --data $FAIREXPR_DATA --images 6400 --batch 128
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torchvision.transforms.v2 as T
from PIL import Image


def plain_loop(files, labels, model, batch, steps, workers):
    class DS(torch.utils.data.Dataset):
        tf = T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True), T.RandomResizedCrop(48, scale=(0.8, 1.0), antialias=True),
                        T.RandomHorizontalFlip(), T.RandomRotation(10), T.ColorJitter(0.2, 0.2), T.Normalize([0.5], [0.5])])

        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            return self.tf(Image.open(files[i]).convert("L")), labels[i]

    dl = torch.utils.data.DataLoader(DS(), batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                                     persistent_workers=workers > 0, prefetch_factor=4 if workers else None)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    crit = torch.nn.CrossEntropyLoss()
    model.train()
    n = 0
    it = iter(dl)
    x, y = next(it)  # warm-up step (worker start-up excluded, as for the engine)
    crit(model(x), y).backward(); opt.step(); opt.zero_grad()
    t0 = time.perf_counter()
    for s in range(steps):
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(dl)
            x, y = next(it)
        loss = crit(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += x.shape[0]
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("FAIREXPR_DATA", "../shared/data"))
    ap.add_argument("--images", type=int, default=6400)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--model-kwargs", default='{"small_input": true}')
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/engine_speed.json")
    a = ap.parse_args()
    from fairexpr.config import load_config
    from fairexpr.data import FERDataset
    from fairexpr.engine import fit
    from fairexpr.models import create_model

    mk = json.loads(a.model_kwargs)
    ds = FERDataset.from_spec(f"fer2013:{a.data}/fer2013", "train")
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(ds), generator=g)[: a.images].tolist()
    files = [ds.samples[i].path for i in pick]
    labels = [ds.samples[i].label for i in pick]
    steps = a.images // a.batch
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "subset.csv"
        manifest.write_text("path,label\n" + "\n".join(f"{f},{ds.classes[l]}" for f, l in zip(files, labels)) + "\n")
        torch.manual_seed(0)
        plain = plain_loop(files, labels, create_model(a.model, 7, in_chans=1, **mk), a.batch, steps, a.workers)
        cfg = load_config(None, extra={"data": {"train": f"csv:{manifest}", "train_split": None, "val": None, "image_size": 48, "channels": 1,
                                                "cache_dir": str(Path(tmp) / "cache")},
                                       "model": {"name": a.model, "kwargs": mk},
                                       "augment": {"crop_scale": [0.8, 1.0], "rotation": 10, "color_jitter": 0.2},
                                       "train": {"epochs": 2, "batch_size": a.batch, "progress": False}})
        res = fit(cfg, Path(tmp) / "run")
        engine = res["history"][-1]["train_images_per_s"]  # second epoch: decode/cache excluded
    out = {"hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
           "model": a.model, "model_kwargs": mk, "images": a.images, "batch": a.batch, "input": "48x48 grayscale",
           "plain_pytorch_images_per_s": plain, "engine_images_per_s": engine, "ratio_engine_over_plain": engine / plain,
           "plain_loop": f"torchvision-reference style: PIL decode + transforms.v2 per image, DataLoader workers={a.workers}, prefetch 4",
           "date": time.strftime("%Y-%m-%d")}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
