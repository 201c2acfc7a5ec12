"""Training throughput: the fairexpr engine vs the compute-only ceiling vs a plain PyTorch loop, measured in
one run on this machine, for each recipe's model, on 1 and on 2 threads.

Three figures per recipe and thread count:

* **ceiling** — forward + backward + optimizer step on ready tensors (one fixed batch, no data pipeline),
  in each of fp32/bf16-autocast x contiguous/channels_last, with glibc malloc tuned as the engine tunes it
  (``fairexpr/engine/allocator.py``): the most this CPU can do with this model; plus the recipe's precision in
  channels_last under glibc's default malloc (``*_system_malloc``), which shows what the allocator setting buys;
* **engine** — ``fairexpr.engine.fit`` on a FER2013 subset with the recipe's own ``train.memory_format``,
  ``train.precision`` and ``train.allocator`` (decode/cache excluded: the best epoch after the first), and the same
  with ``train.allocator=system`` (``engine_system_malloc``);
* **plain** — what torchvision's ``references/classification/train.py`` does: an image-folder dataset decoding
  JPEGs with PIL, per-image ``transforms.v2`` augmentation in DataLoader workers with prefetch, SGD, NCHW fp32.

    python benchmarks/engine_speed.py --data $FAIREXPR_DATA \
        --recipes configs/mobilenet_ldam_cpu.yaml configs/baseline_ce_cpu.yaml@model.kwargs.small_input=false --threads 1 2
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torchvision.transforms.v2 as T
from PIL import Image

from fairexpr._io import atomic_write_text

VARIANTS = [("fp32", "contiguous"), ("fp32", "channels_last"), ("bf16", "contiguous"), ("bf16", "channels_last")]


def ceiling(build, in_chans: int, size: int, batch: int, steps: int, precision: str, fmt: str,
            allocator: str = "tuned") -> float:
    """Images/s of forward + backward + SGD step on one ready batch (the compute-only limit)."""
    from fairexpr.engine.allocator import configure_allocator

    configure_allocator(allocator)
    torch.manual_seed(0)
    model = build()
    model.train()
    x = torch.randn(batch, in_chans, size, size)
    y = torch.randint(0, 7, (batch,))
    if fmt == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True)
    crit = torch.nn.CrossEntropyLoss()

    def step():
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        with ctx:
            out = model(x)
        loss = crit(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up: oneDNN primitive creation
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def plain_loop(files, labels, model, size: int, batch: int, steps: int, workers: int) -> float:
    class DS(torch.utils.data.Dataset):
        tf = T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True), T.RandomResizedCrop(size, scale=(0.8, 1.0), antialias=True),
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
    for _ in range(steps):
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


def split_recipe(spec: str) -> tuple[str, list[str]]:
    """``configs/x.yaml@model.kwargs.small_input=false,train.batch_size=64`` -> (path, overrides)."""
    path, _, over = spec.partition("@")
    return path, [o for o in over.split(",") if o]


def engine_speed(recipe: str, manifest: Path, tmp: Path, images: int, epochs: int = 3, allocator: str | None = None) -> dict:
    """The engine's images/s on the subset: the best epoch after the first (the first decodes and fills the cache).
    ``allocator`` overrides the recipe's ``train.allocator``."""
    from fairexpr.config import load_config
    from fairexpr.engine import fit

    path, overrides = split_recipe(recipe)
    if allocator is not None:
        overrides = [*overrides, f"train.allocator={allocator}"]
    cfg = load_config(path, overrides=overrides, extra={"data": {"train": f"csv:{manifest}", "train_split": None, "val": None, "test": None,
                                              "test_split": None, "val_split": None, "cache_dir": str(tmp / "cache")},
                                     "train": {"epochs": epochs, "max_minutes": None, "progress": False, "eval_tta": "none"}})
    run = tmp / f"run_{len(list(tmp.glob('run_*')))}"
    res = fit(cfg, run)
    per_epoch = [h["train_images_per_s"] for h in res["history"][1:]]
    return {"images_per_s": max(per_epoch), "epochs_images_per_s": per_epoch,
            "memory_format": cfg["train"]["memory_format"], "precision": cfg["train"]["precision"],
            "allocator": res["allocator"]}


def measure_one(spec: dict) -> dict:
    """One measurement in this (fresh) process: ``spec["kind"]`` is ``ceiling`` | ``engine`` | ``plain``."""
    from fairexpr.config import load_config
    from fairexpr.models import create_model

    torch.set_num_threads(int(spec["threads"]))
    path, overrides = split_recipe(spec["recipe"])
    cfg = load_config(path, overrides=overrides)
    m, d, t = cfg["model"], cfg["data"], cfg["train"]
    size, ch, batch = int(d["image_size"]), int(d["channels"]), int(t["batch_size"])
    pretrained = m["pretrained"] if m["pretrained"] and Path(m["pretrained"]).is_file() else None

    def build():
        return create_model(m["name"], 7, pretrained=pretrained, in_chans=ch, **m["kwargs"])

    if spec["kind"] == "ceiling":
        return {"images_per_s": ceiling(build, ch, size, batch, spec["steps"], spec["precision"], spec["format"],
                                        spec.get("allocator", "tuned")),
                "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    if spec["kind"] == "engine":
        return engine_speed(spec["recipe"], Path(spec["manifest"]), Path(spec["tmp"]), spec["images"],
                            allocator=spec.get("allocator"))
    lines = Path(spec["manifest"]).read_text().splitlines()[1:]
    from fairexpr.labels import CANONICAL7
    files = [ln.rsplit(",", 1)[0] for ln in lines]
    labels = [CANONICAL7.index(ln.rsplit(",", 1)[1]) for ln in lines]  # the manifest holds canonical names
    torch.manual_seed(0)
    return {"images_per_s": plain_loop(files, labels, build(), size, batch, spec["steps"], spec["workers"])}


def isolated(spec: dict) -> dict:
    """Run :func:`measure_one` in a fresh Python process with ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set to the
    thread count — how the recipes are run (``OMP_NUM_THREADS=1 fairexpr train ...``) — so no measurement inherits
    another's allocator state, thread pools or warmed-up caches."""
    import subprocess
    import sys

    n = str(spec["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}
    r = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], env=env, capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1])
    if r.returncode != 0:
        raise SystemExit(f"measurement {spec} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(measure_one(json.loads(sys.argv[2]))), flush=True)
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("FAIREXPR_DATA", "../shared/data"))
    ap.add_argument("--recipes", nargs="+", default=["configs/mobilenet_ldam_cpu.yaml",
                                                     "configs/baseline_ce_cpu.yaml@model.kwargs.small_input=false"],
                    help="recipe files, each optionally with @key=value,key=value overrides")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--images", type=int, default=1920, help="FER2013 training images the engine/plain loop iterate over")
    ap.add_argument("--ceiling-steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2,
                    help="interleaved repeats of the ceilings and the engine; each figure is the best of its repeats "
                         "(the machine's other load only ever slows a measurement down)")
    ap.add_argument("--plain-steps", type=int, default=15)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-plain", action="store_true", help="skip the plain-loop figure")
    ap.add_argument("--variants", nargs="+", choices=[f"{p}_{f}" for p, f in VARIANTS],
                    help="ceiling variants to measure (default: all four)")
    ap.add_argument("--no-system-malloc", action="store_true",
                    help="skip the two figures under glibc's default malloc (ceiling in the recipe's precision, NHWC; engine "
                         "with train.allocator=system)")
    ap.add_argument("--engine-only", action="store_true",
                    help="only the engine's images/s per recipe (no ceilings, no plain loop): the table recipes are "
                         "re-timed from (benchmarks/results/recipe_speed.json by default)")
    ap.add_argument("--out", default="benchmarks/results/engine_speed.json")
    ap.add_argument("--same-process", action="store_true",
                    help="measure everything in this one process (the old way) instead of a fresh process per figure")
    a = ap.parse_args()
    if a.engine_only and a.out == "benchmarks/results/engine_speed.json":
        a.out = "benchmarks/results/recipe_speed.json"
    from fairexpr.config import load_config
    from fairexpr.data import FERDataset
    from fairexpr.models import create_model

    ds = FERDataset.from_spec(f"fer2013:{Path(a.data).resolve()}/fer2013", "train")
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(ds), generator=g)[: a.images].tolist()
    files = [ds.samples[i].path for i in pick]
    labels = [ds.samples[i].label for i in pick]
    rows = []
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        manifest = tmp / "subset.csv"
        atomic_write_text(manifest, "path,label\n" + "\n".join(f"{f},{ds.classes[l]}" for f, l in zip(files, labels)) + "\n")
        for recipe in a.recipes:
            path, overrides = split_recipe(recipe)
            cfg = load_config(path, overrides=overrides)
            m, d, t = cfg["model"], cfg["data"], cfg["train"]
            size, ch, batch = int(d["image_size"]), int(d["channels"]), int(t["batch_size"])
            pretrained = m["pretrained"] if m["pretrained"] and Path(m["pretrained"]).is_file() else None

            def build(m=m, ch=ch, pretrained=pretrained):
                return create_model(m["name"], 7, pretrained=pretrained, in_chans=ch, **m["kwargs"])

            for n in a.threads:
                torch.set_num_threads(n)
                row = {"recipe": recipe, "model": m["name"], "model_kwargs": m["kwargs"], "input": f"{size}x{size}x{ch}",
                       "batch": batch, "threads": torch.get_num_threads(), "ceiling": {}, "ceiling_repeats": {},
                       "engine_repeats": []}
                base = {"recipe": recipe, "threads": n, "manifest": str(manifest), "tmp": str(tmp), "images": a.images}

                def run_engine(allocator=None, base=base):
                    if a.same_process:
                        return engine_speed(recipe, manifest, tmp, a.images, allocator=allocator)
                    return isolated({**base, "kind": "engine", "allocator": allocator})

                def run_ceiling(prec, fmt, allocator="tuned", base=base, build=build):
                    if a.same_process:
                        return ceiling(build, ch, size, batch, a.ceiling_steps, prec, fmt, allocator)
                    return isolated({**base, "kind": "ceiling", "steps": a.ceiling_steps, "precision": prec,
                                     "format": fmt, "allocator": allocator})["images_per_s"]

                recipe_prec = "bf16" if str(t["precision"]).startswith("bf16") else "fp32"
                variants = [v for v in VARIANTS if not a.variants or f"{v[0]}_{v[1]}" in a.variants]

                if a.engine_only:
                    for r in range(a.repeats):
                        row["engine_repeats"].append(run_engine())
                    eng = max(row["engine_repeats"], key=lambda e: e["images_per_s"])
                    row["engine"] = eng
                    for k in ("ceiling", "ceiling_repeats"):
                        row.pop(k)
                    print(f"{recipe} threads={n} engine ({eng['precision']}, {eng['memory_format']}): "
                          f"{eng['images_per_s']:.1f} img/s", flush=True)
                    rows.append(row)
                    continue
                for r in range(a.repeats):  # interleaved: a slow spell of the machine hits every figure alike
                    for prec, fmt in variants:
                        v = run_ceiling(prec, fmt)
                        row["ceiling_repeats"].setdefault(f"{prec}_{fmt}", []).append(v)
                        print(f"{recipe} threads={n} repeat {r + 1} ceiling {prec} {fmt}: {v:.1f} img/s", flush=True)
                    if not a.no_system_malloc:
                        v = run_ceiling(recipe_prec, "channels_last", "system")
                        row["ceiling_repeats"].setdefault(f"{recipe_prec}_channels_last_system_malloc", []).append(v)
                        print(f"{recipe} threads={n} repeat {r + 1} ceiling {recipe_prec} channels_last, glibc default "
                              f"malloc: {v:.1f} img/s", flush=True)
                    row["engine_repeats"].append(run_engine())
                    print(f"{recipe} threads={n} repeat {r + 1} engine: {row['engine_repeats'][-1]['images_per_s']:.1f} img/s",
                          flush=True)
                    if not a.no_system_malloc:
                        row.setdefault("engine_system_malloc_repeats", []).append(run_engine("system"))
                        print(f"{recipe} threads={n} repeat {r + 1} engine, glibc default malloc: "
                              f"{row['engine_system_malloc_repeats'][-1]['images_per_s']:.1f} img/s", flush=True)
                row["ceiling"] = {k: max(v) for k, v in row["ceiling_repeats"].items()}
                eng = max(row["engine_repeats"], key=lambda e: e["images_per_s"])
                row["engine"] = eng
                if not a.no_system_malloc:
                    row["engine_system_malloc"] = max(row["engine_system_malloc_repeats"], key=lambda e: e["images_per_s"])
                    row["allocator_gain"] = {
                        "engine": eng["images_per_s"] / row["engine_system_malloc"]["images_per_s"],
                        "ceiling": row["ceiling"][f"{recipe_prec}_channels_last"]
                        / row["ceiling"][f"{recipe_prec}_channels_last_system_malloc"]}
                best_key = max(row["ceiling"], key=row["ceiling"].get)
                row["best_ceiling"] = {"variant": best_key, "images_per_s": row["ceiling"][best_key]}
                row["engine_over_best_ceiling"] = eng["images_per_s"] / row["ceiling"][best_key]
                # paired by repeat: the engine against the best ceiling measured in the same repeat (minutes apart),
                # so a slow or fast spell of the shared machine hits both sides of each ratio
                row["paired_ratios"] = [e["images_per_s"] / max(v[r] for v in row["ceiling_repeats"].values())
                                        for r, e in enumerate(row["engine_repeats"])]
                row["paired_ratio_median"] = float(statistics.median(row["paired_ratios"]))
                print(f"{recipe} threads={n} engine ({eng['precision']}, {eng['memory_format']}): {eng['images_per_s']:.1f} img/s "
                      f"= {row['engine_over_best_ceiling']:.2f} of the best ceiling ({best_key}); paired by repeat: "
                      f"{', '.join(f'{x:.2f}' for x in row['paired_ratios'])} (median {row['paired_ratio_median']:.2f})",
                      flush=True)
                if not a.no_plain:
                    if a.same_process:
                        torch.manual_seed(0)
                        row["plain_images_per_s"] = plain_loop(files, labels, build(), size, batch, a.plain_steps, a.workers)
                    else:
                        row["plain_images_per_s"] = isolated({**base, "kind": "plain", "steps": a.plain_steps,
                                                              "workers": a.workers})["images_per_s"]
                    row["engine_over_plain"] = eng["images_per_s"] / row["plain_images_per_s"]
                    print(f"{recipe} threads={n} plain loop: {row['plain_images_per_s']:.1f} img/s "
                          f"(engine {row['engine_over_plain']:.2f}x)", flush=True)
                rows.append(row)
    out = {"hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
           "images": a.images, "ceiling_steps": a.ceiling_steps, "repeats": a.repeats,
           "method": "each figure is the best of --repeats interleaved repeats (paired_ratios: the engine over the best "
                     "ceiling of the same repeat); the engine's is its best epoch after the "
                     "first of each repeat; ceilings run with glibc malloc tuned as the engine's train.allocator=auto tunes it "
                     "(the *_system_malloc figures with glibc's defaults); " + ("all in one process" if a.same_process else
                                                 "each figure in a fresh process with OMP_NUM_THREADS = MKL_NUM_THREADS = "
                                                 "the thread count, as the recipes are run"),
           "plain_loop": f"torchvision-reference style: PIL decode + transforms.v2 per image, DataLoader workers={a.workers}, "
                         "prefetch 4, NCHW fp32",
           "command": "python benchmarks/engine_speed.py " + " ".join(
               ["--recipes", *a.recipes, "--threads", *map(str, a.threads), "--images", str(a.images),
                "--ceiling-steps", str(a.ceiling_steps), "--repeats", str(a.repeats)] + (["--engine-only"] if a.engine_only else [])
               + (["--no-system-malloc"] if a.no_system_malloc else []) + (["--variants", *a.variants] if a.variants else [])
               + (["--no-plain"] if a.no_plain else [])
               + (["--same-process"] if a.same_process else [])),
           "date": time.strftime("%Y-%m-%d"), "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(a.out), json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
