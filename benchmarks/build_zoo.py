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


def clean_manifest(fx: list[str], data: Path) -> Path:
    """FER2013 PrivateTest minus the images duplicated in train (``fairexpr audit --clean-manifest``), written once."""
    clean = ROOT / "benchmarks" / "runs" / "fer2013_clean.csv"
    if not clean.exists():
        sh(fx + ["audit", f"fer2013:{data / 'fer2013'}", "--json-out", str(clean.parent / "fer2013_audit.json"),
                 "--clean-manifest", str(clean)], clean.parent / "audit.log")
    return clean


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


REPORTED_TTA = ("none", "hflip", "crops")  # the model card's rows per test set


def evaluate_all(dest: Path, run: Path, sets: list[dict[str, Any]]) -> dict[str, Any]:
    """Every test set without TTA, with flip TTA (key suffix ``_tta``) and with crop TTA (``_crops``: the face, five
    95 % crops and the mirrors of all six, ``fairexpr.evaluation.tta``), each written under ``run/zoo_build/KEY``."""
    from fairexpr.engine.evaluate import evaluate_checkpoint
    from fairexpr.evaluation.tta import tta_label

    res: dict[str, Any] = {}
    for ts in sets:
        for tta in REPORTED_TTA:
            key = ts["key"] + {"none": "", "hflip": "_tta", "crops": "_crops"}[tta]
            m = evaluate_checkpoint(dest, ts["spec"], ts["split"], options=ts["options"], tta=tta, progress=False,
                                    out_dir=run / "zoo_build" / key)
            res[key] = {"name": ts["name"] + (f" ({tta_label(tta)})" if tta != "none" else ""), "dataset": ts["spec"].split(":", 1)[0],
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


def latency(dest: Path, runs: int = 300, tta: str = "none") -> dict[str, Any]:
    """Median time of one face (and faces/s in batches of 64) through the packed model, one thread; with a ``tta``
    other than none, the same again with that mode under ``by_tta`` (measured in the same call, so the ratio holds
    even where absolute times drift)."""
    import torch

    from fairexpr.inference.predictor import TorchPredictor

    def one_mode(mode: str, n: int) -> dict[str, float]:
        p = TorchPredictor(dest, tta=mode)
        rng = np.random.default_rng(0)
        face = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
        batch = [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(64)]
        for _ in range(20):
            p.predict_faces([face])
        one = []
        for _ in range(n):
            t = time.perf_counter()
            p.predict_faces([face])
            one.append(time.perf_counter() - t)
        many = []
        for _ in range(20 if mode == "none" else 5):
            t = time.perf_counter()
            p.predict_faces(batch)
            many.append(time.perf_counter() - t)
        return {"single_face_ms_median": 1e3 * statistics.median(one), "runs": n,
                "batch64_faces_per_s": 64 / statistics.median(many)}

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out: dict[str, Any] = one_mode("none", runs)
        if tta != "none":
            out["by_tta"] = {tta: one_mode(tta, max(runs // 3, 20))}
    finally:
        torch.set_num_threads(before)
    return {"threads": 1, **out, "backend": "torch (TorchPredictor, channels_last)", "cpu": hardware_line(),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def inference_lines(side: dict[str, Any], zoo: dict[str, Any]) -> list[str]:
    """The card's words on ``--tta auto``: which mode the model recommends and what it costs."""
    from fairexpr.evaluation.tta import recommended_tta, tta_label

    mode = recommended_tta(side, "sidecar")
    if mode == "none":
        return ["- Inference: `--tta auto` (the default of `predict`, `eval`, `serve`) runs this model without TTA; "
                "`--tta hflip` / `--tta crops` average two / twelve views."]
    lat = zoo.get("latency", {})
    cost = ""
    if mode in lat.get("by_tta", {}):
        b = lat["by_tta"][mode]
        cost = (f" It costs {b['single_face_ms_median']:.1f} ms per face instead of {lat['single_face_ms_median']:.1f} "
                f"({b['single_face_ms_median'] / lat['single_face_ms_median']:.1f}x, one thread, measured in one run).")
    return [f"- Inference: `--tta auto`, the default of `predict`, `eval` and `serve`, runs this model with **{tta_label(mode)}**, "
            "the mode of the results rows marked so below and the one in which it meets the project's bar against "
            "`fer`; `--tta none` (one view) is faster and lower (the rows without TTA)." + cost]


def hardware_line() -> str:
    from compare_fer import hardware  # benchmarks/ is this script's folder, first on sys.path

    h = hardware()
    return f"{h['cpu']}, {h['logical_cpus']} logical CPUs"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def model_card(name: str, side: dict[str, Any], zoo: dict[str, Any], recipe: str, idx: dict[str, Any] | None = None) -> str:
    cfg = side.get("config", {})
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
        f"Recipe: `{recipe}`. `make zoo` runs the same; an interrupted build continues with `--resume`.", ""]
    return "\n".join(lines + card_results(side, zoo, "`fairexpr train --config " + recipe + " data.train=FORMAT:PATH ...`",
                                           "starting from ImageNet-pretrained weights (torchvision's file is BSD-3, "
                                           "ImageNet's images are for non-commercial research)")) + "\n"


def card_results(side: dict[str, Any], zoo: dict[str, Any], retrain: str, start: str) -> list[str]:
    """The model card's sections after the model and training ones: results per test set and per class, what
    ``reliable`` means, speed, licence."""
    from fairexpr.evaluation.tta import tta_label

    t = zoo["test"]
    classes = side["classes"]
    lines = [*inference_lines(side, zoo), "",
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
              f"Side by side with the `fer` package on the same crops: `benchmarks/compare_fer.py --checkpoint {zoo['name']}` "
              "(`benchmarks/results/compare_fer.md` for the default model, `compare_fer_<model>.md` for earlier runs).", "",
              "## What `reliable` means",
              "`predict` marks a face `reliable` when its confidence (1 − normalised entropy of the calibrated "
              "probabilities) is at least `--threshold` (default 0.5). On FER2013 PrivateTest (no TTA):", "",
              "| threshold | faces called reliable | accuracy of those | accuracy of the others |", "|---:|---:|---:|---:|",
              *[f"| {t} | {pct(v['share_reliable'])} % | {pct(v['accuracy_reliable'])} % | {pct(v['accuracy_unreliable'])} % |"
                for t, v in zoo["reliable"]["thresholds"].items()], "",
              "## Speed", f"- {zoo['latency']['backend']}, {zoo['latency']['threads']} thread on {zoo['latency']['cpu']}: "
              f"{zoo['latency']['single_face_ms_median']:.2f} ms per face (median of {zoo['latency']['runs']}, crop -> "
              f"probabilities), {zoo['latency']['batch64_faces_per_s']:.0f} faces/s in batches of 64"
              + (f" (1-minute load average {zoo['latency']['load_average_1min']} while measured: absolute "
                 "times on a shared machine vary, the ratios of one call hold)" if "load_average_1min" in zoo["latency"] else "")
              + ". `fairexpr export` gives an ONNX file that is faster still (see compare_fer.md).",
              *[f"- With {tta_label(m)}: {v['single_face_ms_median']:.2f} ms per face (median of {v['runs']}, the same call), "
                f"{v['batch64_faces_per_s']:.0f} faces/s in batches of 64." for m, v in zoo["latency"].get("by_tta", {}).items()],
              "",
              "## Licence situation — read before use",
              "- The code of fairexpr is MIT. **These weights are not simply MIT**: they were trained on FER2013, which its "
              f"distributors restrict to research use, {start}.",
              "- What that means for you: use the model for research, teaching and evaluation. Before any commercial or "
              "production use, get your own legal advice or retrain the same recipe on data you have rights to "
              f"({retrain}).",
              "- Known limits: FER2013 faces are mostly frontal, 48x48, web-sourced and unevenly spread over age and "
              "ethnicity; accuracy on other populations, poses and lighting is lower (see CK+48 above). Expression is not "
              "emotion: the model reports how a face looks, not what a person feels. Do not use it to make decisions "
              "about people.", "",
              f"Built {zoo['built_at']} with fairexpr {side.get('versions', {}).get('fairexpr')}, torch "
              f"{side.get('versions', {}).get('torch')}."]
    return lines


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


# ----------------------------------------------------------------------------------------- ensembles
MAX_FILE_BYTES = 10 * 2**20  # a packaged file's limit (package data stays small enough for any index)


def member_checkpoint(idx: dict[str, Any], name: str, i: int, m: dict[str, Any], fx: list[str], resume: bool,
                      no_train: bool) -> tuple[Path, dict[str, Any]]:
    """The checkpoint folder of ensemble ``name``'s member ``i`` and what the card says about it: ``{"entry": E}``
    is packaged entry E's folder (built before the ensemble by ``--all``); ``{"recipe": R, "run": DIR}`` is that
    recipe's run, trained here (resumable) unless finished, with the member's ``overrides`` (e.g. ``["seed=1"]``)."""
    from fairexpr import zoo as Z

    where = f"{name}: members[{i}]"
    label = m.get("label") or m.get("entry") or Path(str(m.get("recipe", f"member{i}"))).stem
    if "entry" in m:
        if m["entry"] not in idx["models"] or m["entry"] == name:
            raise SystemExit(f"{where}: entry {m['entry']!r} is not another entry of the zoo index")
        d = Z.ZOO_DIR / m["entry"]
        if not (d / "model.json").is_file():
            raise SystemExit(f"{where}: packaged model {m['entry']!r} is not built yet (build it first: "
                             f"`build_zoo.py --name {m['entry']}`; `--all` builds the entries in index order)")
        side = json.loads((d / "model.json").read_text())
        tr = (side.get("zoo") or {}).get("train", {})
        return d, {"label": label, "source": f"zoo:{m['entry']}", "recipe": idx["models"][m["entry"]].get("recipe"),
                   "best_epoch": tr.get("best_epoch"), "epochs_run": tr.get("epochs_run"),
                   "train_minutes": tr.get("train_minutes")}
    if "recipe" not in m or "run" not in m:
        raise SystemExit(f"{where}: expected {{'entry': NAME}} or {{'recipe': CONFIG, 'run': FOLDER}}, got {m}")
    overrides = m.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
        raise SystemExit(f"{where}: overrides must be a list of KEY=VALUE strings, got {overrides!r}")
    run = ROOT / m["run"]
    if not (run / "result.json").exists():
        if no_train:
            raise SystemExit(f"--no-train: {run} has no finished run (result.json)")
        sh(fx + ["train", "--config", str(ROOT / m["recipe"]), "--out", str(run), "--no-progress", *overrides]
           + (["--resume"] if resume and (run / "last.json").exists() else []))
    res = json.loads((run / "result.json").read_text())
    return run, {"label": label, "source": m["run"], "recipe": m["recipe"] + "".join(f" {o}" for o in overrides),
                 "best_epoch": res["best_epoch"], "epochs_run": res["epochs_run"], "train_minutes": res["train_seconds"] / 60}


def assemble(sources: list[tuple[Path, dict[str, Any]]], weights: list[float]):
    """The members' checkpoints as one ``ensemble`` network (fp32) and its sidecar (temperature 1 until fitted)."""
    from fairexpr import checkpoint as ck
    from fairexpr.models import create_model

    nets, sides = zip(*(ck.load_model(d) for d, _ in sources))
    classes = sides[0]["classes"]
    pre = sides[0]["preprocess"]
    for (d, info), side in zip(sources, sides):
        if side["classes"] != classes:
            raise SystemExit(f"{d}: classes {side['classes']} differ from the first member's {classes}")
        if (side["preprocess"]["input_size"], side["preprocess"]["in_chans"]) != (pre["input_size"], pre["in_chans"]):
            raise SystemExit(f"{d}: input {side['preprocess']['input_size']} x {side['preprocess']['in_chans']} differs "
                             f"from the first member's {pre['input_size']} x {pre['in_chans']} (one shared crop)")
        if side.get("temperature") is None:
            raise SystemExit(f"{d}: no fitted temperature; calibrate it on its validation split first")
    specs = [{"name": side["model"]["name"], "kwargs": {k: v for k, v in side["model"].get("kwargs", {}).items() if k != "in_chans"},
              "mean": side["preprocess"]["mean"], "std": side["preprocess"]["std"], "temperature": float(side["temperature"]),
              "weight": float(w), "label": info["label"], "source": info["source"]}
             for (d, info), side, w in zip(sources, sides, weights)]
    c = int(pre["in_chans"])
    ens = create_model("ensemble", num_classes=len(classes), members=specs, in_chans=c, input_size=list(pre["input_size"]))
    dropped = []
    for net, sub, spec in zip(nets, ens.members, specs):
        gone = net.drop_unused() if hasattr(net, "drop_unused") else []
        dropped.append({"member": spec["label"], "dropped": gone})
        sub.load_state_dict(net.state_dict(), strict=True)
    side = {"model": {"name": "ensemble", "num_classes": len(classes),
                      "kwargs": {"members": specs, "in_chans": c, "input_size": list(pre["input_size"])}},
            "classes": classes, "preprocess": {"input_size": list(pre["input_size"]), "in_chans": c,
                                               "mean": [0.0] * c, "std": [1.0] * c},
            "method": "ensemble", "temperature": 1.0,
            "ensemble": {"weights": [s["weight"] / sum(weights) for s in specs],
                         "members": [{**info, "temperature": s["temperature"],
                                      "calibration": side.get("calibration"), "architecture": s["name"]}
                                     for (_, info), s, side in zip(sources, specs, sides)],
                         "unused_layers_dropped": dropped}}
    return ens.eval(), side


def pack_members(run: Path, dest: Path, storage: str) -> dict[str, Any]:
    """The ensemble's weights from ``run`` into ``dest``, one file per member (``model.safetensors`` = member 0,
    ``model.member<i>.safetensors`` listed in the sidecar's ``extra_weights``), each at most 10 MB."""
    from fairexpr import checkpoint as ck

    state = ck.load_tensors(run / "model.safetensors")
    side = ck.read_json(run / "model.json")
    n_members = len(side["model"]["kwargs"]["members"])
    groups: list[dict[str, Any]] = [{} for _ in range(n_members)]
    for k, v in state.items():
        if not k.startswith("members."):
            raise SystemExit(f"{run}: ensemble tensor {k!r} outside members.*")
        groups[int(k.split(".")[1])][k] = v.half() if v.is_floating_point() and storage == "fp16" else v
    from safetensors.torch import save

    names = ["model.safetensors"] + [f"model.member{i}.safetensors" for i in range(1, n_members)]
    blobs = [save({k: v.contiguous() for k, v in g.items()}) for g in groups]
    for name, blob in zip(names, blobs):
        if len(blob) > MAX_FILE_BYTES:
            raise SystemExit(f"{dest / name}: {len(blob) / 2**20:.2f} MB is over the {MAX_FILE_BYTES / 2**20:g} MB a "
                             "packaged file may take (--storage fp16 halves it); nothing written")
    for stale in dest.glob("model.member*.safetensors"):
        stale.unlink()
    for name, blob in zip(names, blobs):
        ck.atomic_write_bytes(dest / name, blob)
    side["storage_dtype"] = "float16" if storage == "fp16" else "float32"
    side["extra_weights"] = names[1:]
    ck.atomic_write_json(dest / "model.json", side)
    n = sum(v.numel() for v in state.values() if v.is_floating_point())
    return {"parameters_and_buffers": int(n), "bytes": sum((dest / f).stat().st_size for f in names),
            "files": {f: (dest / f).stat().st_size for f in names},
            "fp32_bytes": (run / "model.safetensors").stat().st_size, "dtype": "torch.float16" if storage == "fp16" else "torch.float32"}


def inference_section(idx: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The index entry's ``inference`` section (the recommended TTA mode that ``--tta auto`` resolves to), checked;
    None when the entry names none."""
    from fairexpr.evaluation.tta import recommended_tta

    inf = idx["models"][name].get("inference")
    if inf is None:
        return None
    try:
        return {"tta": recommended_tta({"inference": inf}, f"index.json: models.{name}")}
    except ValueError as e:
        raise SystemExit(str(e)) from None


def recommended_mode(idx: dict[str, Any], name: str) -> str:
    """The TTA mode the entry recommends (``none`` when it names none): the one its build also times."""
    return (inference_section(idx, name) or {}).get("tta", "none")


def set_inference(side: dict[str, Any], idx: dict[str, Any], name: str) -> None:
    """Copy the index entry's ``inference`` section into a packed sidecar (or drop a stale one)."""
    inf = inference_section(idx, name)
    if inf is None:
        side.pop("inference", None)
    else:
        side["inference"] = inf


def build_ensemble(idx: dict[str, Any], name: str, a: argparse.Namespace) -> None:
    from fairexpr import checkpoint as ck
    from fairexpr import zoo as Z
    from fairexpr.cli.calibrate import calibrate_checkpoint

    entry = idx["models"][name]
    members = entry["members"]
    weights = entry.get("weights") or [1.0] * len(members)
    if not isinstance(members, list) or len(members) < 2 or len(weights) != len(members) or \
            not all(isinstance(w, (int, float)) and w > 0 for w in weights):
        raise SystemExit(f"{name}: an ensemble entry needs >= 2 members and one positive weight per member")
    data = Path(a.data).resolve()
    fx = [sys.executable, "-m", "fairexpr.cli"]
    t0 = time.time()
    sources = [member_checkpoint(idx, name, i, m, fx, a.resume, a.no_train) for i, m in enumerate(members)]
    ens, side = assemble(sources, [float(w) for w in weights])
    run = ROOT / entry.get("run", f"benchmarks/runs/{name}")
    run.mkdir(parents=True, exist_ok=True)
    ck.save_model(run, ens, side)
    # the mixture of calibrated members need not be calibrated itself: one more temperature, fitted on the members'
    # validation split (FER2013 PublicTest), like every trained model's
    cal = calibrate_checkpoint(run, f"fer2013:{data / 'fer2013'}", "public_test", progress=False)
    clean = clean_manifest(fx, data)
    dest = Z.ZOO_DIR / name
    dest.mkdir(parents=True, exist_ok=True)
    packed = pack_members(run, dest, a.storage)
    parity = fp16_parity(run, dest, f"fer2013:{data / 'fer2013'}", "private_test")
    print(f"packed {dest} ({packed['bytes'] / 2**20:.2f} MB in {len(packed['files'])} files, {a.storage}); parity {parity}",
          flush=True)
    tests = evaluate_all(dest, run, test_sets(data, clean.resolve()))
    zoo = {"name": name, "built_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "command": f"FAIREXPR_DATA=../shared/data OMP_NUM_THREADS=2 .venv/bin/python benchmarks/build_zoo.py --name "
                      f"{shlex.quote(name)} --storage {a.storage}   # make zoo builds every entry",
           "recipe": None, "pack": packed, "storage_parity": parity, "test": tests, "latency": latency(dest, tta=recommended_mode(idx, name)),
           "reliable": reliable_split(run), "ensemble_temperature": {"T": ck.read_json(run / "model.json")["temperature"],
                                                                      "before": cal["before"],
                                                                      "after": cal["after"], "n": cal["n"]},
           "train": {"train_minutes": sum((m.get("train_minutes") or 0) for _, m in sources), "hardware": hardware_line()},
           "build_seconds": time.time() - t0}
    side = ck.read_json(dest / "model.json")
    side["zoo"] = zoo
    set_inference(side, idx, name)
    ck.atomic_write_json(dest / "model.json", side)
    ck.atomic_write_bytes(dest / "MODEL_CARD.md", ensemble_card(name, side, zoo, idx).encode())
    print(f"wrote {dest}/model.json and MODEL_CARD.md", flush=True)


def ensemble_card(name: str, side: dict[str, Any], zoo: dict[str, Any], idx: dict[str, Any]) -> str:
    ens = side["ensemble"]
    is_default = idx.get("default") == name
    pre = side["preprocess"]
    et = zoo["ensemble_temperature"]
    rows = []
    for spec, m, w in zip(side["model"]["kwargs"]["members"], ens["members"], ens["weights"]):
        cal = m.get("calibration") or {}
        rows.append(f"| {m['label']} | `{spec['name']}` {json.dumps(spec['kwargs'])} | {m['source']} | `{m['recipe']}` | "
                    f"{m.get('best_epoch')} of {m.get('epochs_run')} | {(m.get('train_minutes') or 0):.1f} | "
                    f"{spec['mean']} / {spec['std']} | {spec['temperature']:.4f} ({pct(cal.get('before', {}).get('ece'))} -> "
                    f"{pct(cal.get('after', {}).get('ece'))} %) | {w:.3f} |")
    files = ", ".join(f"`{f}` {b / 2**20:.2f} MB" for f, b in zoo["pack"]["files"].items())
    lines = [
        f"# Model card: `{name}`" + (" (fairexpr's default model)" if is_default else ""), "",
        "Seven basic expressions (" + ", ".join(side["classes"]) + ") from one face crop, answering offline right after "
        "`pip install fairexpr`: " + ("`fairexpr predict photo.jpg` uses it when no `--checkpoint` is given." if is_default
                                      else f"`fairexpr predict photo.jpg --checkpoint {name}`."), "",
        "## Model",
        f"- An ensemble of {len(rows)} networks trained separately on FER2013 (`fairexpr.models.ensemble`): each member "
        "normalises the shared crop its own way, divides its logits by its own temperature, and the answer is the "
        "weighted mean of the members' calibrated probabilities (weights fixed before any test set was seen). One "
        "network to every command: `eval`, `predict`, `serve`, `export` (one ONNX graph), flip and crop TTA."
        + (f" Members: {idx['models'][name]['selection']}" if idx["models"][name].get("selection") else ""),
        f"- Input {pre['input_size'][0]}x{pre['input_size'][1]} grey, pixel / 255 (each member normalises it as it was "
        f"trained); {zoo['pack']['parameters_and_buffers'] / 1e6:.2f} M parameters and buffers (layers a member never runs "
        "are not stored: " + "; ".join(f"{d['member']}: {', '.join(d['dropped']) or 'none'}" for d in ens["unused_layers_dropped"]) + ").",
        f"- Storage: {side.get('storage_dtype')} safetensors, one file per member ({files}); the packed files vs the "
        f"fp32 ensemble on FER2013 PrivateTest: argmax agreement {100 * zoo['storage_parity']['argmax_agreement']:.2f} %, "
        f"max |Δp| {zoo['storage_parity']['max_abs_prob_diff']:.1e}.",
        f"- Confidence: each member's temperature was fitted on FER2013 PublicTest at the end of its training; the "
        f"mixture gets one more, T = {et['T']:.4f}, fitted on the same split (n = {et['n']}): ECE "
        f"{pct(et['before'].get('ece'))} % -> {pct(et['after'].get('ece'))} %.", "",
        "## Members", "",
        "| member | network | checkpoint | recipe | best epoch | training min | mean / std | temperature (PublicTest ECE) | weight |",
        "|---|---|---|---|---:|---:|---|---|---:|", *rows, "",
        "## Training data and protocol",
        "- FER2013 (Goodfellow et al. 2013), Kaggle image-folder release: Training (28,709 faces) -> each member's weights; "
        "PublicTest -> each member's model selection (best balanced accuracy, flip TTA) and temperatures; PrivateTest -> "
        "reported once.",
        f"- {zoo['train']['train_minutes']:.1f} minutes of training in all (the members' runs) on {zoo['train']['hardware']}; "
        "each member's recipe is in the table (its header comment says how it was chosen).", "",
        "## Rebuild", "```bash", zoo["command"], "```",
        "The members are built first (a packaged member by its own entry, a recipe member by `fairexpr train`, "
        "resumable with `--resume`); `benchmarks/ensemble.py` measures the same average from the members' checkpoints "
        "with paired bootstrap intervals against each member.", ""]
    retrain = "each member's recipe, `fairexpr train --config RECIPE data.train=FORMAT:PATH ...`, then this build"
    return "\n".join(lines + card_results(side, zoo, retrain, ensemble_start(side))) + "\n"


START_WEIGHTS = {  # the pretrained weights a member network starts from, for the licence section
    "mobilenet_v2": "ImageNet-pretrained weights (torchvision's MobileNetV2, BSD-3; ImageNet's images are for "
                    "non-commercial research)",
    "dlib_resnet29": "dlib's face-recognition ResNet (CC0, trained by dlib's author on about 3 million faces of public "
                     "datasets)"}


def ensemble_start(side: dict[str, Any]) -> str:
    """"starting from ..." for the licence section: the start of every member network, each named once, in order."""
    names = list(dict.fromkeys(m["name"] for m in side["model"]["kwargs"]["members"]))
    unknown = [n for n in names if n not in START_WEIGHTS]
    if unknown:
        raise SystemExit(f"build_zoo: no licence line for member network(s) {unknown}; add them to START_WEIGHTS")
    return "starting from " + " and from ".join(START_WEIGHTS[n] for n in names)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", default=None, help="zoo entry (default: the index's default model)")
    ap.add_argument("--all", action="store_true", help="build every entry of the index (those others start from first)")
    ap.add_argument("--run", default=None, help="training run folder (default: the entry's `run` in index.json)")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted training run")
    ap.add_argument("--data", default=os.environ.get("FAIREXPR_DATA"), help="dataset root (default $FAIREXPR_DATA)")
    ap.add_argument("--no-train", action="store_true", help="use the finished run as it is (error when it is not)")
    ap.add_argument("--card-only", action="store_true",
                    help="rewrite MODEL_CARD.md from the packaged sidecar's zoo section (after an index or text change); "
                         "nothing is trained, packed or measured")
    ap.add_argument("--latency", action="store_true",
                    help="with --card-only: measure the packed model's speed again (no TTA and the entry's recommended "
                         "mode, one thread) before rewriting the card")
    ap.add_argument("--storage", choices=("fp32", "fp16"), default=None,
                    help="weights as trained (fp32, exact; MobileNetV2 is 8.7 MB) or halved (fp16: 0.14 %% of PrivateTest "
                         "predictions flipped, max |dp| 0.012 once the temperature sharpens the logits); default: the "
                         "entry's `storage` in index.json, else fp32 (the ensemble's members need fp16 to stay under "
                         "10 MB a file)")
    a = ap.parse_args(argv)
    from fairexpr import zoo as Z

    idx = Z.index()
    if a.all and (a.name or a.run):
        raise SystemExit("--all builds every entry in its own run folder: leave out --name and --run")
    names = list(idx["models"]) if a.all else [a.name or idx["default"]]
    if a.card_only:
        for name in names:
            if name not in idx["models"]:
                raise SystemExit(f"--name {name!r}: not in {Z.ZOO_DIR / 'index.json'} (known: {', '.join(idx['models'])})")
            rewrite_card(idx, name, remeasure_latency=a.latency)
        return 0
    if a.latency:
        raise SystemExit("--latency re-measures a packed model's speed for --card-only; a build always measures it")
    if not a.data or not Path(a.data).is_dir():
        raise SystemExit("--data / $FAIREXPR_DATA: the dataset root (fer2013/, ferplus/, ckplus/) is required")
    storage = a.storage
    for name in names:
        if name not in idx["models"]:
            raise SystemExit(f"--name {name!r}: not in {Z.ZOO_DIR / 'index.json'} (known: {', '.join(idx['models'])})")
        a.storage = storage or idx["models"][name].get("storage", "fp32")
        if a.storage not in ("fp32", "fp16"):
            raise SystemExit(f"{name}: storage {a.storage!r} in index.json; expected fp32 or fp16")
        if idx["models"][name].get("members"):
            if a.run:
                raise SystemExit(f"--run: {name} is an ensemble; its members' runs are in index.json")
            build_ensemble(idx, name, a)
        else:
            build(idx, name, a, Path(a.run) if a.run else None)
    return 0


def rewrite_card(idx: dict[str, Any], name: str, remeasure_latency: bool = False) -> None:
    """MODEL_CARD.md of a built entry again from its sidecar (whose ``zoo`` section holds every measured figure);
    with ``remeasure_latency`` its speed is measured again first (no TTA and the entry's recommended mode)."""
    from fairexpr import checkpoint as ck
    from fairexpr import zoo as Z

    side = ck.read_json(Z.ZOO_DIR / name / "model.json")
    if "zoo" not in side:
        raise SystemExit(f"--card-only: {name} was never built (its model.json has no zoo section)")
    zoo = side["zoo"]
    set_inference(side, idx, name)  # the index's recommended TTA mode may have changed since the build
    if remeasure_latency:
        zoo["latency"] = latency(Z.ZOO_DIR / name, tta=recommended_mode(idx, name))
        zoo["latency"]["measured_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        print(f"latency {json.dumps(zoo['latency'])}", flush=True)
    ck.atomic_write_json(Z.ZOO_DIR / name / "model.json", side)
    card = (ensemble_card(name, side, zoo, idx) if idx["models"][name].get("members")
            else model_card(name, side, zoo, zoo["recipe"], idx))
    ck.atomic_write_bytes(Z.ZOO_DIR / name / "MODEL_CARD.md", card.encode())
    print(f"wrote {Z.ZOO_DIR / name / 'MODEL_CARD.md'}", flush=True)


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
    clean = clean_manifest(fx, data)
    dest = Z.ZOO_DIR / name
    dest.mkdir(parents=True, exist_ok=True)
    packed = pack(run, dest, a.storage)
    parity = fp16_parity(run, dest, f"fer2013:{data / 'fer2013'}", "private_test")
    print(f"packed {dest / 'model.safetensors'} ({packed['bytes'] / 2**20:.2f} MB, {a.storage}); parity {parity}", flush=True)
    tests = evaluate_all(dest, run, test_sets(data, clean.resolve()))
    lat = latency(dest, tta=recommended_mode(idx, name))
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
    set_inference(side, idx, name)
    ck.atomic_write_json(dest / "model.json", side)
    ck.atomic_write_bytes(dest / "MODEL_CARD.md", model_card(name, side, zoo, recipe, idx).encode())
    print(f"wrote {dest}/model.json and MODEL_CARD.md", flush=True)


if __name__ == "__main__":
    sys.exit(main())
