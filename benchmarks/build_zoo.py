"""Rebuild a packaged model of the zoo (``src/fairexpr/zoo/<name>/``): train its recipe (resumable), calibrate,
pack the weights in fp16, evaluate the packed file on every test set we have, time it, and write its sidecar
``zoo`` section and ``MODEL_CARD.md``. ``make zoo`` runs it for the default model::

    FAIREXPR_DATA=../shared/data OMP_NUM_THREADS=2 .venv/bin/python benchmarks/build_zoo.py \\
        --run benchmarks/runs/default_model            # add --resume after an interruption

Steps (each skipped when its output exists and is current):
  1. ``fairexpr train --config RECIPE --out RUN`` (``--resume`` continues a killed run from ``last.*``).
  2. The temperature: the engine fits it on the validation split at the end of training (``train.calibrate``);
     a run from before that gets it from ``fairexpr.cli.calibrate.calibrate_checkpoint`` on the same split.
  3. Pack: the weights as trained (fp32; ``--storage fp16`` halves them, the loader casts back into the fp32 module);
     the packed file's predictions are compared with the run's on FER2013 PrivateTest (argmax agreement, max |Δp|).
  4. Evaluate the *packed* model (what ships) on FER2013 PrivateTest, PrivateTest minus the images whose pixels
     also occur in train (``fairexpr audit --clean-manifest``), FER+ test (majority, 7 classes) and CK+48,
     each without and with flip TTA; per-class accuracy, balanced accuracy, ECE.
  5. Latency on one thread (PyTorch): one 48x48 crop -> probabilities (median of 300), faces/s in batches of 64.
  6. ``model.json`` gets a ``zoo`` section with all of it, and ``MODEL_CARD.md`` is written from it.

The side-by-side comparison with the ``fer`` package is ``benchmarks/compare_fer.py --checkpoint default``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def test_sets(data: Path, clean_manifest: Path) -> list[dict[str, Any]]:
    return [
        {"key": "fer2013_private", "name": "FER2013 PrivateTest", "spec": f"fer2013:{data / 'fer2013'}", "split": "private_test",
         "options": {}},
        {"key": "fer2013_private_dedup", "name": "FER2013 PrivateTest minus train duplicates", "spec": f"csv:{clean_manifest}",
         "split": "private_test", "options": {}},
        {"key": "ferplus_test", "name": "FER+ test (majority, 7 classes)", "spec": f"ferplus:{data / 'ferplus'}", "split": "test",
         "options": {"num_classes": 7}},
        {"key": "ckplus48", "name": "CK+48 (contempt dropped; no neutral)", "spec": f"ckplus:{data / 'ckplus' / 'CK+48'}",
         "split": None, "options": {}},
    ]


def sh(cmd: list[str], log: Path | None = None) -> None:
    import subprocess

    print("$", shlex.join(cmd), flush=True)
    r = subprocess.run(cmd, stdout=None if log is None else open(log, "w"), stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise SystemExit(f"command failed ({r.returncode}): {shlex.join(cmd)}" + (f"; see {log}" if log else ""))


def pack(run: Path, dest: Path, storage: str = "fp32") -> dict[str, Any]:
    """Copy of ``run``'s deployable weights (``storage``: fp32 as trained, or fp16) + its sidecar into ``dest``."""
    import torch

    from fairexpr import checkpoint as ck

    state = ck.load_tensors(run / "model.safetensors")
    packed = {k: (v.half() if v.is_floating_point() and storage == "fp16" else v) for k, v in state.items()}
    side = ck.read_json(run / "model.json")
    side["storage_dtype"] = "float16" if storage == "fp16" else "float32"
    ck.atomic_save_tensors(dest / "model.safetensors", packed)
    ck.atomic_write_json(dest / "model.json", side)
    n = sum(v.numel() for v in state.values() if v.is_floating_point())
    return {"parameters_and_buffers": int(n), "bytes": (dest / "model.safetensors").stat().st_size,
            "fp32_bytes": (run / "model.safetensors").stat().st_size,
            "dtype": str(torch.float16 if storage == "fp16" else torch.float32)}


def fp16_parity(run: Path, dest: Path, spec: str, split: str) -> dict[str, Any]:
    """The packed file's predictions against the run's fp32 weights on one split."""
    from fairexpr.engine.evaluate import evaluate_checkpoint

    out = {}
    for tag, ckpt in (("fp32", run), ("fp16", dest)):
        m = evaluate_checkpoint(ckpt, spec, split, out_dir=run / "zoo_build" / f"parity_{tag}", progress=False)
        with np.load(Path(m["out_dir"]) / "predictions.npz") as f:
            out[tag] = f["probs"]
    a, b = out["fp32"], out["fp16"]
    return {"set": f"{spec} [{split}]", "n": int(len(a)), "argmax_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
            "max_abs_prob_diff": float(np.abs(a - b).max())}


def evaluate_all(dest: Path, run: Path, sets: list[dict[str, Any]]) -> dict[str, Any]:
    from fairexpr.engine.evaluate import evaluate_checkpoint

    res: dict[str, Any] = {}
    for ts in sets:
        for tta in ("none", "hflip"):
            key = ts["key"] + ("_tta" if tta == "hflip" else "")
            m = evaluate_checkpoint(dest, ts["spec"], ts["split"], options=ts["options"], tta=tta, progress=False,
                                    out_dir=run / "zoo_build" / key)
            res[key] = {"name": ts["name"] + (" (flip TTA)" if tta == "hflip" else ""), "dataset": ts["spec"].split(":", 1)[0],
                        "split": ts["split"], "tta": tta, "n": m["n"], "accuracy": m["accuracy"],
                        "balanced_accuracy": m["balanced_accuracy"], "macro_f1": m["macro_f1"], "ece": m["ece"],
                        "nll": m["nll"], "per_class_accuracy": m["per_class_accuracy"], "n_per_class": m["n_per_class"],
                        "excluded": m.get("dropped_absent_classes", {})}
            print(f"  {res[key]['name']:<58} n={m['n']:<5} acc {100 * m['accuracy']:.1f}  bal {100 * m['balanced_accuracy']:.1f}  "
                  f"ECE {100 * m['ece']:.1f}", flush=True)
    return res


def reliable_split(run: Path, key: str = "fer2013_private", thresholds: tuple[float, ...] = (0.3, 0.4, 0.5)) -> dict[str, Any]:
    """What ``reliable`` (confidence = 1 - normalised entropy >= threshold, the predictors' rule) means on a test set:
    the share of faces called reliable and the accuracy of those and of the others."""
    from fairexpr.inference.predictor import normalized_entropy_confidence

    with np.load(run / "zoo_build" / key / "predictions.npz") as f:
        p, y = f["probs"].astype(np.float64), f["y_true"]
    conf = normalized_entropy_confidence(p)
    hit = p.argmax(1) == y
    out = {}
    for t in thresholds:
        r = conf >= t
        out[f"{t:g}"] = {"share_reliable": float(r.mean()), "accuracy_reliable": float(hit[r].mean()) if r.any() else None,
                         "accuracy_unreliable": float(hit[~r].mean()) if (~r).any() else None}
    return {"set": key, "rule": "confidence = 1 - H(p)/log K >= threshold", "thresholds": out}


def latency(dest: Path, runs: int = 300) -> dict[str, Any]:
    import torch

    from fairexpr.inference.predictor import TorchPredictor

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        p = TorchPredictor(dest)
        rng = np.random.default_rng(0)
        face = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
        batch = [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(64)]
        for _ in range(20):
            p.predict_faces([face])
        one = []
        for _ in range(runs):
            t = time.perf_counter()
            p.predict_faces([face])
            one.append(time.perf_counter() - t)
        many = []
        for _ in range(20):
            t = time.perf_counter()
            p.predict_faces(batch)
            many.append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(before)
    return {"threads": 1, "single_face_ms_median": 1e3 * statistics.median(one), "runs": runs,
            "batch64_faces_per_s": 64 / statistics.median(many), "backend": "torch (TorchPredictor, channels_last)",
            "cpu": hardware_line()}


def hardware_line() -> str:
    from compare_fer import hardware  # benchmarks/ is this script's folder, first on sys.path

    h = hardware()
    return f"{h['cpu']}, {h['logical_cpus']} logical CPUs"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def model_card(name: str, side: dict[str, Any], zoo: dict[str, Any], recipe: str, idx: dict[str, Any] | None = None) -> str:
    cfg = side.get("config", {})
    t = zoo["test"]
    cal = side.get("calibration", {})
    classes = side["classes"]
    is_default = idx is None or idx.get("default") == name
    head = (side["model"].get("kwargs") or {}).get("head", "linear")
    logits = ("logits are cosines (LDAM's normed head)" if head == "normed" else "logits of a linear head")
    stages = zoo.get("stages") or []
    data = cfg.get("data", {})
    if len(stages) > 1:
        first = stages[0]
        start = [f"- Stage 1 (`{first['entry']}`, `{first['recipe']}`): torchvision's ImageNet MobileNetV2 "
                 f"(`mobilenet_v2-b0353104.pth`, first conv summed to one grey channel) fine-tuned on FER2013 Training "
                 f"(28,709 faces) with LDAM-DRW; best epoch {first['best_epoch']} of {first['epochs_run']}, "
                 f"{first['train_minutes']:.1f} min.",
                 f"- Stage 2 (this recipe): stage 1's backbone and a fresh {head} head trained on "
                 f"`{data.get('train', '?').split(':')[0]}` [{data.get('train_split')}] with "
                 f"`label_mode: {data.get('label_mode')}` {json.dumps(data.get('train_options', {}))}"
                 + (": the FER+ vote distributions of the *same* FER2013 training photos (10 annotators each) — extra "
                    "supervision of images stage 1 already saw, never of a test image (FER+ train = FER2013 Training)."
                    if str(data.get("train", "")).startswith("ferplus:") and data.get("train_split") == "train" else ".")]
    else:
        start = ["- FER2013 (Goodfellow et al. 2013), Kaggle image-folder release: Training (28,709 faces) -> weights.",
                 "- Start: torchvision's ImageNet MobileNetV2 (`mobilenet_v2-b0353104.pth`), first conv summed to one grey "
                 "channel."]
    lines = [
        f"# Model card: `{name}`" + (" (fairexpr's default model)" if is_default else ""), "",
        "Seven basic expressions (" + ", ".join(classes) + ") from one face crop, answering offline right after "
        "`pip install fairexpr`: " + ("`fairexpr predict photo.jpg` uses it when no `--checkpoint` is given." if is_default
                                      else f"`fairexpr predict photo.jpg --checkpoint {name}`."), "",
        "## Model",
        f"- Architecture: `{side['model']['name']}` {json.dumps(side['model'].get('kwargs', {}))}, "
        f"{zoo['pack']['parameters_and_buffers'] / 1e6:.2f} M parameters and buffers; input "
        f"{side['preprocess']['input_size'][0]}x{side['preprocess']['input_size'][1]} grey "
        f"(mean {side['preprocess']['mean']}, std {side['preprocess']['std']}).",
        f"- Storage: {side.get('storage_dtype')} safetensors, {zoo['pack']['bytes'] / 2**20:.2f} MB; the packed file vs the "
        f"run's weights on FER2013 PrivateTest: argmax agreement {100 * zoo['storage_parity']['argmax_agreement']:.2f} %, "
        f"max |Δp| {zoo['storage_parity']['max_abs_prob_diff']:.1e}.",
        f"- Confidence: {logits}; the stored temperature T = {side.get('temperature', 1.0):.4f} "
        f"was fitted on {cal.get('dataset', '?').split(':')[0]} [{cal.get('split')}] (n = {cal.get('n')}): ECE "
        f"{pct(cal.get('before', {}).get('ece'))} % -> {pct(cal.get('after', {}).get('ece'))} %.", "",
        "## Training data and protocol",
        *start,
        "- FER2013 PublicTest -> model selection (best balanced accuracy, flip TTA) and the temperature; PrivateTest "
        "-> reported once.",
        f"- Loss {cfg.get('loss', {}).get('name')} {json.dumps(cfg.get('loss', {}).get('kwargs', {}))}; optimiser "
        f"{json.dumps(cfg.get('optim', {}))}; schedule {json.dumps(cfg.get('schedule', {}))}; "
        f"{cfg.get('train', {}).get('epochs')} epochs, batch {cfg.get('train', {}).get('batch_size')}; augmentation "
        f"{json.dumps(cfg.get('augment', {}))}.",
        f"- Best epoch {zoo['train']['best_epoch']} of {zoo['train']['epochs_run']} (selection metric "
        f"{zoo['train']['select_metric']} = {pct(zoo['train']['best'])} %), {zoo['train']['train_minutes']:.1f} minutes of "
        f"training{' over all stages' if len(stages) > 1 else ''} on {zoo['train']['hardware']}.", "",
        "## Rebuild", "```bash", zoo["command"], "```",
        f"Recipe: `{recipe}`. `make zoo` runs the same; an interrupted build continues with `--resume`.", "",
        f"## Results (the packaged {'fp16' if side.get('storage_dtype') == 'float16' else 'fp32'} file, PyTorch, measured by the build)", "",
        "| test set | n | accuracy % | balanced accuracy % | macro-F1 % | ECE % |", "|---|---:|---:|---:|---:|---:|"]
    for r in t.values():
        lines.append(f"| {r['name']} | {r['n']} | {pct(r['accuracy'])} | {pct(r['balanced_accuracy'])} | {pct(r['macro_f1'])} | {pct(r['ece'])} |")
    lines += ["", "Per-class accuracy % (no TTA):", "",
              "| test set | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for r in t.values():
        if r["tta"] == "none":
            lines.append(f"| {r['name']} | " + " | ".join(pct(r["per_class_accuracy"].get(c)) for c in classes) + " |")
    ex = {r["name"]: r["excluded"] for r in t.values() if r["excluded"] and r["tta"] == "none"}
    if ex:
        lines += ["", "Excluded from evaluation (classes the model does not have): "
                  + "; ".join(f"{k}: {v}" for k, v in ex.items()) + "."]
    lines += ["", "CK+48 has no neutral class: its balanced accuracy is over the 6 classes present, while the model may "
              "still answer neutral. FER+ test is the same photos as PrivateTest relabelled by 10 annotators (majority "
              "vote): a cross-labelling test, not a new population.", "",
              "Side by side with the `fer` package on the same crops: `benchmarks/compare_fer.py --checkpoint default` "
              "(`benchmarks/results/compare_fer.md`).", "",
              "## What `reliable` means",
              "`predict` marks a face `reliable` when its confidence (1 − normalised entropy of the calibrated "
              "probabilities) is at least `--threshold` (default 0.5). On FER2013 PrivateTest (no TTA):", "",
              "| threshold | faces called reliable | accuracy of those | accuracy of the others |", "|---:|---:|---:|---:|",
              *[f"| {t} | {pct(v['share_reliable'])} % | {pct(v['accuracy_reliable'])} % | {pct(v['accuracy_unreliable'])} % |"
                for t, v in zoo["reliable"]["thresholds"].items()], "",
              "## Speed", f"- {zoo['latency']['backend']}, {zoo['latency']['threads']} thread on {zoo['latency']['cpu']}: "
              f"{zoo['latency']['single_face_ms_median']:.2f} ms per face (median of {zoo['latency']['runs']}, crop -> "
              f"probabilities), {zoo['latency']['batch64_faces_per_s']:.0f} faces/s in batches of 64. `fairexpr export` "
              "gives an ONNX file that is faster still (see compare_fer.md).", "",
              "## Licence situation — read before use",
              "- The code of fairexpr is MIT. **These weights are not simply MIT**: they were trained on FER2013, which its "
              "distributors restrict to research use, starting from ImageNet-pretrained weights (torchvision's file is "
              "BSD-3, ImageNet's images are for non-commercial research).",
              "- What that means for you: use the model for research, teaching and evaluation. Before any commercial or "
              "production use, get your own legal advice or retrain the same recipe on data you have rights to "
              "(`fairexpr train --config " + recipe + " data.train=FORMAT:PATH ...`).",
              "- Known limits: FER2013 faces are mostly frontal, 48x48, web-sourced and unevenly spread over age and "
              "ethnicity; accuracy on other populations, poses and lighting is lower (see CK+48 above). Expression is not "
              "emotion: the model reports how a face looks, not what a person feels. Do not use it to make decisions "
              "about people.", "",
              f"Built {zoo['built_at']} with fairexpr {side.get('versions', {}).get('fairexpr')}, torch "
              f"{side.get('versions', {}).get('torch')}."]
    return "\n".join(lines) + "\n"


def entry_run(idx: dict[str, Any], name: str) -> Path:
    """The training run folder of a zoo entry (``run`` in index.json, relative to the repository)."""
    return ROOT / idx["models"][name].get("run", "benchmarks/runs/default_model")


def train_entry(idx: dict[str, Any], name: str, fx: list[str], resume: bool, no_train: bool,
                run: Path | None = None, _chain: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Train ``name``'s recipe into its run folder unless finished, after the entry it starts from
    (``start_from``: that entry's run gives the backbone, ``model.pretrained=<run>``). Returns the stages in
    training order, each ``{"entry", "recipe", "run", "result"}``."""
    entry = idx["models"][name]
    if name in _chain:
        raise SystemExit(f"start_from in the zoo index forms a cycle: {' -> '.join(_chain + (name,))}")
    stages: list[dict[str, Any]] = []
    extra: list[str] = []
    if entry.get("start_from"):
        if entry["start_from"] not in idx["models"]:
            raise SystemExit(f"{name}: start_from {entry['start_from']!r} is not in the zoo index")
        stages = train_entry(idx, entry["start_from"], fx, resume, no_train, _chain=_chain + (name,))
        extra = [f"model.pretrained={stages[-1]['run']}"]
    run = run or entry_run(idx, name)
    if not (run / "result.json").exists():
        if no_train:
            raise SystemExit(f"--no-train: {run} has no finished run (result.json)")
        sh(fx + ["train", "--config", str(ROOT / entry["recipe"]), "--out", str(run), "--no-progress", *extra]
           + (["--resume"] if resume and (run / "last.json").exists() else []))
    return stages + [{"entry": name, "recipe": entry["recipe"], "run": run,
                      "result": json.loads((run / "result.json").read_text())}]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", default=None, help="zoo entry (default: the index's default model)")
    ap.add_argument("--all", action="store_true", help="build every entry of the index (those others start from first)")
    ap.add_argument("--run", default=None, help="training run folder (default: the entry's `run` in index.json)")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted training run")
    ap.add_argument("--data", default=os.environ.get("FAIREXPR_DATA"), help="dataset root (default $FAIREXPR_DATA)")
    ap.add_argument("--no-train", action="store_true", help="use the finished run as it is (error when it is not)")
    ap.add_argument("--storage", choices=("fp32", "fp16"), default="fp32",
                    help="weights as trained (fp32, exact; MobileNetV2 is 8.7 MB) or halved (fp16: 0.14 %% of PrivateTest "
                         "predictions flipped, max |dp| 0.012 once the temperature sharpens the logits)")
    a = ap.parse_args(argv)
    if not a.data or not Path(a.data).is_dir():
        raise SystemExit("--data / $FAIREXPR_DATA: the dataset root (fer2013/, ferplus/, ckplus/) is required")
    from fairexpr import zoo as Z

    idx = Z.index()
    if a.all and (a.name or a.run):
        raise SystemExit("--all builds every entry in its own run folder: leave out --name and --run")
    names = list(idx["models"]) if a.all else [a.name or idx["default"]]
    for name in names:
        if name not in idx["models"]:
            raise SystemExit(f"--name {name!r}: not in {Z.ZOO_DIR / 'index.json'} (known: {', '.join(idx['models'])})")
        build(idx, name, a, Path(a.run) if a.run else None)
    return 0


def build(idx: dict[str, Any], name: str, a: argparse.Namespace, run: Path | None) -> None:
    from fairexpr import zoo as Z
    from fairexpr import checkpoint as ck

    recipe = idx["models"][name]["recipe"]
    data = Path(a.data).resolve()
    fx = [sys.executable, "-m", "fairexpr.cli"]
    t0 = time.time()
    stages = train_entry(idx, name, fx, a.resume, a.no_train, run)
    run = stages[-1]["run"]
    result = stages[-1]["result"]
    side = ck.read_json(run / "model.json")
    val = (f"{side['config']['data']['val']}", side["config"]["data"]["val_split"])
    if (side.get("calibration") or {}).get("fitted_by") != "train":  # a run from before train.calibrate existed
        from fairexpr.cli.calibrate import calibrate_checkpoint

        calibrate_checkpoint(run, val[0], val[1], progress=False)
    clean = ROOT / "benchmarks" / "runs" / "fer2013_clean.csv"
    if not clean.exists():
        sh(fx + ["audit", f"fer2013:{data / 'fer2013'}", "--json-out", str(clean.parent / "fer2013_audit.json"),
                 "--clean-manifest", str(clean)], clean.parent / "audit.log")
    dest = Z.ZOO_DIR / name
    dest.mkdir(parents=True, exist_ok=True)
    packed = pack(run, dest, a.storage)
    parity = fp16_parity(run, dest, f"fer2013:{data / 'fer2013'}", "private_test")
    print(f"packed {dest / 'model.safetensors'} ({packed['bytes'] / 2**20:.2f} MB, {a.storage}); parity {parity}", flush=True)
    tests = evaluate_all(dest, run, test_sets(data, clean.resolve()))
    lat = latency(dest)
    rel = reliable_split(run)
    zoo = {"name": name, "built_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "command": "FAIREXPR_DATA=../shared/data OMP_NUM_THREADS=2 .venv/bin/python benchmarks/build_zoo.py --name "
                      + shlex.quote(name) + "   # make zoo builds every entry",
           "recipe": recipe, "pack": packed, "storage_parity": parity, "test": tests, "latency": lat, "reliable": rel,
           "train": {"best_epoch": result["best_epoch"], "epochs_run": result["epochs_run"], "best": result["best"],
                     "select_metric": side["config"]["train"]["select_metric"], "stopped_by": result["stopped_by"],
                     "train_minutes": sum(st["result"]["train_seconds"] for st in stages) / 60,
                     "hardware": hardware_line()},
           "stages": [{"entry": st["entry"], "recipe": st["recipe"], "run": os.path.relpath(st["run"], ROOT),
                       "best_epoch": st["result"]["best_epoch"], "epochs_run": st["result"]["epochs_run"],
                       "train_minutes": st["result"]["train_seconds"] / 60} for st in stages],
           "build_seconds": time.time() - t0}
    side = ck.read_json(dest / "model.json")
    side["zoo"] = zoo
    ck.atomic_write_json(dest / "model.json", side)
    ck.atomic_write_bytes(dest / "MODEL_CARD.md", model_card(name, side, zoo, recipe, idx).encode())
    print(f"wrote {dest}/model.json and MODEL_CARD.md", flush=True)


if __name__ == "__main__":
    sys.exit(main())
