"""Issue-3 benchmark: imbalance-aware baselines on real FER data, same CPU budget per run.

FER2013 (train minus a 10 % stratified validation holdout -> PrivateTest, and PrivateTest without the
images that also occur in train), ResNet-18 from scratch (standard stem by default, `--model-kwargs`), 48x48 grayscale:
CE, class-weighted CE, LDAM-DRW, class-balanced sampler + CE. FER+ (majority protocol, train -> test):
CE on majority labels vs soft-label CE on the vote distributions, and LDAM-DRW on the majority labels.

Each run is a separate `fairexpr train` process (a crash loses one run, not all; finished runs are
skipped when the script is re-run). Results: benchmarks/results/baselines.json and baselines.md.

    python benchmarks/run_baselines.py --data $FAIREXPR_DATA --cpu-minutes 24 --epochs 8
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from fairexpr._io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]

FER_RUNS = {
    "ce": ["--config", "configs/baseline_ce_cpu.yaml"],
    "weighted_ce": ["--config", "configs/weighted_ce_cpu.yaml"],
    "ldam_drw": ["--config", "configs/ldam_drw_cpu.yaml", "loss.kwargs.drw_epoch=6"],
    "balanced_sampler": ["--config", "configs/balanced_sampler_cpu.yaml"],
}


def sh(cmd: list[str], log: Path) -> None:
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("FAIREXPR_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "runs"))
    ap.add_argument("--cpu-minutes", type=float, default=24.0, help="process CPU-time budget per run")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", help="subset of runs (names)")
    ap.add_argument("--model-kwargs", default="{small_input: false}")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    fx = [sys.executable, "-m", "fairexpr.cli"]
    fer = f"fer2013:{a.data}/fer2013"
    # 1. the de-duplicated PrivateTest manifest (test images whose pixels also occur in train removed)
    clean = out / "fer2013_clean.csv"
    if not clean.exists():
        sh(fx + ["audit", fer, "--json-out", str(out / "fer2013_audit.json"), "--clean-manifest", str(clean),
                 "--chart", str(out / "fer2013_imbalance.png")], out / "audit.log")
    common = [f"train.max_minutes={a.cpu_minutes}", "train.budget_clock=process", f"train.epochs={a.epochs}",
              f"seed={a.seed}", "--no-progress", f"model.kwargs={a.model_kwargs}"]
    runs = dict(FER_RUNS)
    ferplus = f"ferplus:{a.data}/ferplus"
    runs["ferplus_ce"] = ["--config", "configs/baseline_ce_cpu.yaml", f"data.train={ferplus}", "data.train_split=train",
                          "data.train_options={protocol: majority, num_classes: 7}", f"data.val={ferplus}", "data.val_split=val",
                          "data.val_options={protocol: majority, num_classes: 7}", f"data.test={ferplus}", "data.test_split=test",
                          "data.test_options={protocol: majority, num_classes: 7}"]
    runs["ferplus_soft_ce"] = ["--config", "configs/baseline_ce_cpu.yaml", f"data.train={ferplus}", "data.train_split=train",
                               "data.train_options={protocol: probability, num_classes: 7}", "data.label_mode=soft", "loss.name=soft_ce",
                               f"data.val={ferplus}", "data.val_split=val", "data.val_options={protocol: majority, num_classes: 7}",
                               f"data.test={ferplus}", "data.test_split=test", "data.test_options={protocol: majority, num_classes: 7}"]
    # imbalance-aware loss on FER+ too (majority labels): the same LDAM-DRW recipe as the FER2013 row
    runs["ferplus_ldam_drw"] = ["--config", "configs/ldam_drw_cpu.yaml", "loss.kwargs.drw_epoch=6", *runs["ferplus_ce"][2:]]
    results = {}
    res_file = ROOT / "benchmarks" / "results" / "baselines.json"
    if res_file.exists():
        results = json.loads(res_file.read_text()).get("runs", {})
    for name, args in runs.items():
        if a.only and name not in a.only:
            continue
        run_dir = out / f"{name}_s{a.seed}"
        if not (run_dir / "result.json").exists():
            print(f"[bench] {name} ...", flush=True)
            t0 = time.time()
            sh(fx + ["train", "--out", str(run_dir)] + args + common + (["--resume"] if (run_dir / "last.json").exists() else []),
               out / f"{name}_s{a.seed}.log")
            print(f"[bench] {name} done in {(time.time() - t0) / 60:.1f} min", flush=True)
        r = json.loads((run_dir / "result.json").read_text())
        import yaml

        rcfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        entry = {"train_seconds_cpu": r["train_seconds"], "epochs": r["epochs_run"], "best_epoch": r["best_epoch"],
                 "budget": {"cpu_minutes": rcfg["train"]["max_minutes"], "max_epochs": rcfg["train"]["epochs"]},
                 "images_per_s": sum(h["train_images_per_s"] for h in r["history"]) / len(r["history"]),
                 "test": _pick(r["eval"]["test"])}
        if not name.startswith("ferplus"):
            ev = run_dir / "eval" / "private_test_dedup" / "metrics.json"
            if not ev.exists():
                sh(fx + ["eval", "--checkpoint", str(run_dir), "--data", f"csv:{clean}", "--split", "private_test",
                         "--name", "private_test_dedup"], out / f"{name}_s{a.seed}_dedup.log")
            entry["test_dedup"] = _pick(json.loads(ev.read_text()))
        results[name] = entry
        write(results, a)


def _pick(m: dict) -> dict:
    keys = ("n", "accuracy", "balanced_accuracy", "macro_f1", "per_class_accuracy", "per_class_accuracy_min",
            "per_class_accuracy_max", "per_class_accuracy_gap", "ece")
    return {k: m[k] for k in keys}


def write(results: dict, a) -> None:
    import torch

    meta = {"hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU, torch {torch.__version__}",
            "budget": "per run: a process CPU-time budget and an epoch cap (see each run's `budget`); the CPU-min column is what each run used",
            "model": f"resnet18 {a.model_kwargs}, from scratch (no pretrained weights)", "input": "48x48 grayscale",
            "seed": a.seed, "validation": "10% stratified holdout of train (FER2013) / FER2013Valid (FER+)",
            "selection": "best validation balanced accuracy", "date": time.strftime("%Y-%m-%d"),
            "note": "img/s is wall-clock throughput while other jobs shared the 2 cores; budgets are CPU time, which is fair under load"}
    d = ROOT / "benchmarks" / "results"
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "baselines.json", json.dumps({"meta": meta, "runs": results}, indent=2))
    lines = ["| run | test set | n | accuracy | balanced acc | macro-F1 | min class acc | max class acc | epochs | CPU-min | img/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, e in results.items():
        for tag in ("test", "test_dedup"):
            if tag not in e:
                continue
            m = e[tag]
            ts = ("FER+ test (majority)" if name.startswith("ferplus") else
                  "PrivateTest" if tag == "test" else "PrivateTest, train dups removed")
            lines.append(f"| {name} | {ts} | {m['n']} | {100 * m['accuracy']:.1f} | {100 * m['balanced_accuracy']:.1f} | "
                         f"{100 * m['macro_f1']:.1f} | {100 * m['per_class_accuracy_min']:.1f} | "
                         f"{100 * m['per_class_accuracy_max']:.1f} | {e['epochs']} | {e['train_seconds_cpu'] / 60:.1f} | "
                         f"{e['images_per_s']:.0f} |")
    atomic_write_text(d / "baselines.md", "\n".join(lines) + "\n\n" + "\n".join(f"- {k}: {v}" for k, v in meta.items()) + "\n")


if __name__ == "__main__":
    main()
