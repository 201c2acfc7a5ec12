"""Issue 15's comparison: dlib's face-recognition ResNet-29 (fine-tuned, stage 3, 64 px grey) vs ImageNet
MobileNetV2 (64 px) on FER2013 with the same data and the same CPU-time budget per run, evaluated on PrivateTest
and, cross-dataset, on FER+ test and CK+48. Two studies:

* ``--study supervised`` (default): LDAM-DRW on all FER2013 labels, each backbone's own recipe
  (``configs/ldam_drw_dlib_cpu.yaml``, ``configs/mobilenet_ldam_cpu.yaml``), epochs sized to fill the budget;
* ``--study face2exp``: Meta-Face2Exp with 10 % of the FER2013 labels (per class, drawn from the seed, so both
  backbones of one seed see the same labels) and UTKFace as the unlabelled faces. Both arms are
  ``configs/face2exp_dlib_cpu.yaml``; the MobileNetV2 arm swaps the model section and the settings that recipe family
  tuned for MobileNetV2 (``configs/face2exp_mobilenet_cpu.yaml``: B's lr 0.01, weight decay 5e-5, A's lr 0.002;
  fp32, where bf16 slows MobileNetV2 down) and keeps every Meta-Face2Exp setting. The derived config is written
  beside the cell. The LR schedule follows the CPU budget (``train.max_minutes``), so both arms finish their schedule.

Each cell is one `fairexpr train` process with one thread (the two run side by side); a finished cell whose
saved command and config content (the recipe file, or the derived config) equal the requested ones is reused.
Results: ``benchmarks/results/face_backbone.{json,md}`` and ``face_backbone_face2exp.{json,md}``.

    python benchmarks/face_backbone.py --data $FAIREXPR_DATA --cpu-minutes 12 --seeds 0 1 2
    python benchmarks/face_backbone.py --data $FAIREXPR_DATA --study face2exp --cpu-minutes 12 --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fairexpr._io import atomic_write_text  # noqa: E402

# backbone -> (recipe, one-thread img/s it trains at: sizes the epochs to ~90 % of the budget, see recipe_speed.json)
CELLS = {
    "dlib_resnet29": ("configs/ldam_drw_dlib_cpu.yaml", 490.0),
    # 167 img/s in the committed 12-minute run; 237 since train.allocator (engine_speed.json, 2026-12-04)
    "mobilenet_v2 (ImageNet)": ("configs/mobilenet_ldam_cpu.yaml", 237.0),
}
N_TRAIN = 28709
# face2exp study: backbone -> changes to configs/face2exp_dlib_cpu.yaml (None = the recipe as it is)
F2E_RECIPE = "configs/face2exp_dlib_cpu.yaml"
F2E_CELLS = {
    "dlib_resnet29": None,
    "mobilenet_v2 (ImageNet)": {
        "model": {"name": "mobilenet_v2", "pretrained": "${FAIREXPR_WEIGHTS:-../shared/weights}/mobilenet_v2-b0353104.pth",
                  "kwargs": {"small_input": False, "drop_rate": 0.2}},
        "optim": {"lr": 0.01, "weight_decay": 5.0e-5},
        "method": {"adaptation_lr": 0.002},
        "train": {"precision": "32-true"},
    },
}


def derived_config(name: str, out: Path) -> Path:
    """The face2exp study's config for one backbone, written to ``out`` (the recipe with :data:`F2E_CELLS`'s changes)."""
    import yaml

    cfg = yaml.safe_load((ROOT / F2E_RECIPE).read_text())
    change = F2E_CELLS[name]
    if change:
        cfg["model"] = dict(change["model"])
        for section in ("optim", "method", "train"):
            cfg[section] = {**cfg[section], **change.get(section, {})}
    out.parent.mkdir(parents=True, exist_ok=True)
    text = (f"# derived from {F2E_RECIPE} by benchmarks/face_backbone.py --study face2exp ({name})\n"
            + yaml.safe_dump(cfg, sort_keys=False))
    from _cells import write_recipe

    return write_recipe(out, text)  # atomically: the parallel cells share it


def run(cmd: list[str], out: Path, log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def cell(name: str, seed: int, a: argparse.Namespace) -> dict:
    fer = f"fer2013:{a.data / 'fer2013'}"
    out = a.runs / f"{name.split(' ')[0]}_s{seed}"
    if a.study == "face2exp":
        recipe = str(derived_config(name, a.runs / f"{name.split(' ')[0]}.yaml"))
        import yaml

        epochs = int(yaml.safe_load(Path(recipe).read_text())["train"]["epochs"])
        cmd = [sys.executable, "-m", "fairexpr.cli", "train", "--config", recipe, f"data.train={fer}", "data.train_split=train",
               f"data.test={fer}", "data.test_split=private_test", f"data.unlabelled=faces:{a.data / 'utkface' / 'crop_part1'}",
               f"train.max_minutes={a.cpu_minutes}", "train.budget_clock=process", f"seed={seed}", "--no-progress"]
    else:
        recipe, ips = CELLS[name]
        epochs = max(1, int(0.9 * a.cpu_minutes * 60 * ips / N_TRAIN))
        cmd = [sys.executable, "-m", "fairexpr.cli", "train", "--config", recipe, f"data.train={fer}", "data.train_split=train",
               f"data.val={fer}", "data.val_split=public_test", f"data.test={fer}", "data.test_split=private_test",
               f"train.epochs={epochs}", f"train.max_minutes={a.cpu_minutes}", "train.budget_clock=process",
               f"loss.kwargs.drw_epoch={int(0.7 * epochs)}", f"seed={seed}", "--no-progress"]
    # a finished cell is reused only when its command AND the recipe file's content are the ones requested
    record = {"cmd": cmd, "recipe_sha256": hashlib.sha256((ROOT / recipe).read_bytes()).hexdigest()}
    if not ((out / "command.json").is_file() and json.loads((out / "command.json").read_text()) == record
            and (out / "result.json").is_file()):
        out.mkdir(parents=True, exist_ok=True)
        run(cmd + ["--out", str(out), "--resume"] if (out / "last.json").is_file() else cmd + ["--out", str(out)],
            out, out.with_suffix(".log"))
        atomic_write_text(out / "command.json", json.dumps(record))
    res = json.loads((out / "result.json").read_text())
    evals = {"fer2013_private": res["eval"]["test"]}
    for key, spec, split, opts in (("ferplus_test", f"ferplus:{a.data / 'ferplus'}", "test", ["--option", "num_classes=7"]),
                                   ("ckplus48", f"ckplus:{a.data / 'ckplus' / 'CK+48'}", None, [])):
        p = out / "eval" / key / "metrics.json"
        if not p.is_file():
            run([sys.executable, "-m", "fairexpr.cli", "eval", "--checkpoint", str(out), "--data", spec,
                 *(["--split", split] if split else []), *opts, "--name", key, "--no-progress"], out, out.parent / f"{out.name}_{key}.log")
        evals[key] = json.loads(p.read_text())
    hist = res["history"]
    return {"backbone": name, "seed": seed, "recipe": recipe, "epochs": epochs, "epochs_run": res["epochs_run"],
            "best_epoch": res["best_epoch"], "stopped_by": res["stopped_by"], "cpu_minutes": a.cpu_minutes,
            "train_images_per_s": max(h["train_images_per_s"] for h in hist), "command": cmd,
            "metrics": {k: {m: v[m] for m in ("n", "accuracy", "balanced_accuracy", "macro_f1", "ece")} for k, v in evals.items()}}


def main() -> None:
    from compare_fer import hardware
    from fairexpr.evaluation.stats import format_difference, paired_difference

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("FAIREXPR_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--cpu-minutes", type=float, default=24.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--study", choices=("supervised", "face2exp"), default="supervised",
                    help="supervised: LDAM-DRW on all labels; face2exp: Meta-Face2Exp with 10 %% of the labels")
    ap.add_argument("--runs", type=Path, help="cell directories (default benchmarks/runs/face_backbone[_face2exp])")
    ap.add_argument("--results", type=Path, help="results stem (default benchmarks/results/face_backbone[_face2exp])")
    a = ap.parse_args()
    suffix = "" if a.study == "supervised" else "_face2exp"
    a.runs = a.runs or ROOT / "benchmarks" / "runs" / f"face_backbone{suffix}"
    a.results = a.results or ROOT / "benchmarks" / "results" / f"face_backbone{suffix}"
    a.runs.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with ThreadPoolExecutor(2) as ex:
        futs = [ex.submit(cell, n, s, a) for s in a.seeds for n in CELLS]
        rows = [f.result() for f in futs]
    names = list(CELLS)
    diffs = {}
    for key in ("fer2013_private", "ferplus_test", "ckplus48"):
        for m in ("accuracy", "balanced_accuracy"):
            va = {r["seed"]: r["metrics"][key][m] for r in rows if r["backbone"] == names[1]}
            vb = {r["seed"]: r["metrics"][key][m] for r in rows if r["backbone"] == names[0]}
            diffs[f"{key}/{m}"] = paired_difference(va, vb)
    question = ("which pretrained backbone fine-tunes better on FER2013 at an equal CPU budget?" if a.study == "supervised" else
                "which pretrained backbone gives the better Meta-Face2Exp model with 10 % of the FER2013 labels at an equal "
                "CPU budget?")
    rep = {"question": question, "study": a.study,
           "hardware": hardware(), "torch": __import__("torch").__version__, "date": time.strftime("%Y-%m-%d"),
           "wall_minutes": (time.time() - t0) / 60, "seeds": a.seeds,
           "command": "python benchmarks/face_backbone.py " + " ".join(sys.argv[1:]), "rows": rows,
           "dlib_minus_mobilenet": diffs}
    a.results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.results.with_suffix(".json"), json.dumps(rep, indent=2))
    hw = rep["hardware"]
    what = "LDAM-DRW, all labels" if a.study == "supervised" else "Meta-Face2Exp, 10 % labels + UTKFace unlabelled"
    md = [f"# Face backbone vs ImageNet backbone: FER2013 {what}, {a.cpu_minutes:g} CPU-minutes per run, seeds {a.seeds}", "",
          f"{hw['cpu']}, {hw['logical_cpus']} logical CPUs, torch {rep['torch']}, one thread per run, two runs side by side; "
          f"`{rep['command']}`", "",
          "| backbone | seed | epochs (best) | img/s | PrivateTest acc / bal % | FER+ test acc / bal % | CK+48 acc / bal % |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["metrics"]
        md.append(f"| {r['backbone']} | {r['seed']} | {r['epochs_run']} ({r['best_epoch']}) | {r['train_images_per_s']:.0f} | "
                  + " | ".join(f"{100 * m[k]['accuracy']:.1f} / {100 * m[k]['balanced_accuracy']:.1f}"
                               for k in ("fer2013_private", "ferplus_test", "ckplus48")) + " |")
    md += ["", "dlib − MobileNetV2, paired by seed (points): " + "; ".join(
        f"{k.replace('/', ' ')} {format_difference(d)}" for k, d in diffs.items())]
    atomic_write_text(a.results.with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
