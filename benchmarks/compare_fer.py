"""fairexpr vs the ``fer`` package (justinshenk/fer, mini-Xception ``.tflite``): accuracy on the same face
crops, and speed on the same machine (issue 8, "Benchmark").

Run with the project's interpreter; fer runs in its own environment (``benchmarks/.venv-fer``, created as
described in ``benchmarks/compare_fer.md``) through ``benchmarks/_fer_worker.py`` — the two exchange
``.npy`` files in a temp dir, so neither imports the other's libraries::

    FAIREXPR_DATA=/work/shared/data .venv/bin/python benchmarks/compare_fer.py \\
        --checkpoint benchmarks/runs/ldam_drw_s0 --clean-manifest benchmarks/runs/fer2013_clean.csv

What is compared
  * Test sets (each model gets the identical decoded 48x48 grayscale crops, resized by its own
    preprocessing: ours from the checkpoint sidecar, fer's ``cv2.resize`` to 64x64 + ``[-1, 1]`` scaling):
    FER2013 PrivateTest, the de-duplicated PrivateTest (``--clean-manifest``, a ``csv:`` manifest written by
    ``fairexpr audit --clean-manifest``), FER+ test (majority vote, 7 classes: contempt-majority images
    dropped) and CK+48 (all 981 frames minus contempt; CK+ has no neutral, so balanced accuracy is over 6
    classes, while both models may still predict neutral).
  * Our checkpoint through ``fairexpr.engine.evaluate.evaluate_checkpoint`` (PyTorch), and through the ONNX
    fp32 / int8 files written by ``fairexpr.inference.export.export_checkpoint`` (int8: static QDQ,
    calibrated on FER2013 *train* images only). Metrics: ``fairexpr.evaluation.metrics.evaluate`` for all.
  * Speed, 1 thread everywhere (``torch.set_num_threads(1)``, onnxruntime ``intra_op_num_threads=1``,
    LiteRT ``num_threads=1``, ``cv2.setNumThreads(1)``): single-face latency (median of ``--runs``,
    uint8 crop -> probabilities, preprocessing included) and faces/s on a batch of 64; end-to-end
    photos/s with detection (OpenCV Haar cascade) on composite photos of CK+ faces.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FER_PY = ROOT / "benchmarks" / ".venv-fer" / "bin" / "python"
WORKER = ROOT / "benchmarks" / "_fer_worker.py"
PYEMOTION_PY = ROOT / "benchmarks" / ".venv-pyemotion" / "bin" / "python"
PYEMOTION_WORKER = ROOT / "benchmarks" / "_pyemotion_worker.py"
NATIVE = 48  # FER2013, FER+ and CK+48 are all distributed as 48x48 grayscale crops (checked per set below)


# ----------------------------------------------------------------------------------------------- helpers
def worker(fer_python: Path, *args: str, timeout: float = 1800, script: Path = WORKER) -> dict[str, Any]:
    """Run a peer's worker (``_fer_worker.py`` by default) in its own environment; returns its JSON."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FER_WORKER_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PYTHONPATH", None)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    try:
        r = subprocess.run([str(fer_python), str(script), *args, "--json", str(out)], env=env, capture_output=True,
                           text=True, timeout=timeout)
        if r.returncode != 0:
            raise SystemExit(f"fer worker {' '.join(args[:1])} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def load_avg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def wait_for_load(max_load: float, max_wait: float) -> dict[str, Any]:
    """Wait (up to ``max_wait`` s) until the 1-minute load average is below ``max_load``."""
    t0 = time.time()
    while os.getloadavg()[0] >= max_load and time.time() - t0 < max_wait:
        time.sleep(10)
    la = load_avg()
    return {"load_avg_1_5_15": la, "waited_s": round(time.time() - t0, 1), "below_threshold": la[0] < max_load,
            "threshold": max_load}


def median_ms(fn: Callable[[], Any], runs: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return {"median_ms": 1e3 * statistics.median(ts), "p90_ms": 1e3 * float(np.percentile(ts, 90)), "runs": runs}


def hardware() -> dict[str, Any]:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")).split()[1])
        mem = round(kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "memory_gib": mem, "os": platform.platform(),
            "python": platform.python_version()}


# ----------------------------------------------------------------------------------------------- data
def test_sets(data_root: Path, clean_manifest: str | None) -> list[dict[str, Any]]:
    sets = [{"name": "FER2013 PrivateTest", "key": "fer2013_private", "spec": f"fer2013:{data_root / 'fer2013'}",
             "split": "private_test", "options": {}}]
    if clean_manifest:
        path = Path(clean_manifest)
        if not path.is_file():
            raise SystemExit(f"--clean-manifest: {path} not found (write it with `fairexpr audit ... --clean-manifest`)")
        sets.append({"name": "FER2013 PrivateTest, de-duplicated", "key": "fer2013_private_clean",
                     "spec": f"csv:{path.resolve()}", "split": "private_test", "options": {}})
    if (data_root / "ferplus").is_dir():
        sets.append({"name": "FER+ test (majority, 7 classes)", "key": "ferplus_test", "spec": f"ferplus:{data_root / 'ferplus'}",
                     "split": "test", "options": {"num_classes": 7}})
    sets.append({"name": "CK+48 (7-class: contempt dropped; no neutral)", "key": "ckplus48",
                 "spec": f"ckplus:{data_root / 'ckplus' / 'CK+48'}", "split": None, "options": {}})
    return sets


def native_crops(ts: dict[str, Any], classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Decode a test set once, at its native 48x48 grayscale, into ``classes`` (absent classes dropped)."""
    from PIL import Image

    from fairexpr.data.base import FERDataset
    from fairexpr.engine.data import _remap, load_split

    ds = FERDataset.from_spec(ts["spec"], ts["split"], **ts["options"])
    sizes: dict[str, int] = {}
    for s in ds.samples:
        with Image.open(s.path) as im:
            key = f"{im.size[0]}x{im.size[1]} {im.mode}"
        sizes[key] = sizes.get(key, 0) + 1
    sp = load_split("eval", ts["spec"], ts["split"], ts["options"],
                    {"image_size": NATIVE, "channels": 1, "on_bad_file": "error", "cache_dir": None}, progress=False)
    sp = _remap(sp, classes)
    return sp.images[:, 0].numpy().copy(), sp.labels.numpy().copy(), {
        "source_image_sizes": sizes, "dropped_absent_classes": sp.info.get("dropped_absent_classes", {})}


def calibration_faces(data_root: Path, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` seeded random FER2013 *train* crops (uint8 gray) for int8 calibration — never test images."""
    from PIL import Image

    from fairexpr.data.base import FERDataset

    ds = FERDataset.from_spec(f"fer2013:{data_root / 'fer2013'}", "train")
    idx = np.random.default_rng(seed).choice(len(ds), size=min(n, len(ds)), replace=False)
    out = []
    for i in idx:
        with Image.open(ds.samples[int(i)].path) as im:
            out.append(np.asarray(im.convert("L")))
    return out


def composite_photos(faces: np.ndarray, labels: np.ndarray, n_photos: int, per_photo: int = 4, face_px: int = 144,
                     seed: int = 0) -> tuple[np.ndarray, list[list[dict[str, Any]]]]:
    """Photos ``[M, 480, 640, 3]`` uint8 with ``per_photo`` CK+ faces each, upscaled to ``face_px`` and
    pasted on a textured grey canvas at jittered grid positions; returns the pasted boxes and labels."""
    import cv2

    rng = np.random.default_rng(seed)
    H, W = 480, 640
    photos, truth = [], []
    cols = per_photo if per_photo <= 4 else 4
    cell_w = W // cols
    for _ in range(n_photos):
        canvas = np.clip(rng.normal(120, 12, size=(H, W)), 0, 255).astype(np.uint8)
        canvas = cv2.GaussianBlur(canvas, (0, 0), 3)
        boxes = []
        for j, k in enumerate(rng.choice(len(faces), size=per_photo, replace=False)):
            face = cv2.resize(faces[k], (face_px, face_px), interpolation=cv2.INTER_CUBIC)
            r, c = divmod(j, cols)
            x = c * cell_w + int(rng.integers(0, max(1, cell_w - face_px)))
            y = 40 + r * (face_px + 40) + int(rng.integers(0, max(1, H - 80 - face_px - r * (face_px + 40))))
            y = min(y, H - face_px)
            canvas[y:y + face_px, x:x + face_px] = face
            boxes.append({"box": [x, y, face_px, face_px], "label": int(labels[k])})
        photos.append(np.repeat(canvas[:, :, None], 3, axis=2))
        truth.append(boxes)
    return np.stack(photos), truth


def match(truth: list[dict[str, Any]], det_boxes: list[list[int]]) -> list[int | None]:
    """For each detection, the index of the pasted face whose box contains the detection's centre."""
    out: list[int | None] = []
    for b in det_boxes:
        cx, cy = b[0] + b[2] / 2, b[1] + b[3] / 2
        hit = None
        for i, t in enumerate(truth):
            x, y, w, h = t["box"]
            if x <= cx < x + w and y <= cy < y + h:
                hit = i
                break
        out.append(hit)
    return out


def e2e_summary(truth: list[list[dict[str, Any]]], dets: list[list[tuple[list[int], int]]]) -> dict[str, Any]:
    """Detection recall, false positives and accuracy on detected faces (canonical label indices)."""
    n_true = sum(len(t) for t in truth)
    found, fp, correct = 0, 0, 0
    for t, d in zip(truth, dets):
        hits = match(t, [b for b, _ in d])
        seen = set()
        for h, (_, lab) in zip(hits, d):
            if h is None or h in seen:
                fp += 1
                continue
            seen.add(h)
            found += 1
            correct += int(lab == t[h]["label"])
    return {"faces_pasted": n_true, "faces_found": found, "recall": found / n_true if n_true else None,
            "false_or_duplicate_detections": fp, "accuracy_on_found": correct / found if found else None}


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True,
                    help="fairexpr run directory (model.safetensors + model.json), or a packaged model's name (default)")
    ap.add_argument("--data-root", default=os.environ.get("FAIREXPR_DATA"), help="default: $FAIREXPR_DATA")
    ap.add_argument("--clean-manifest", default=None, help="csv manifest from `fairexpr audit --clean-manifest`")
    ap.add_argument("--fer-python", default=str(FER_PY), help="interpreter of the fer benchmark environment")
    ap.add_argument("--pyemotion-python", default=str(PYEMOTION_PY),
                    help="interpreter of the PyEmotion environment (see benchmarks/_pyemotion_worker.py); the peer is "
                         "left out, with a printed and recorded reason, when it does not exist")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="writes compare_fer.json/.md here")
    ap.add_argument("--runs", type=int, default=300, help="single-face latency runs (median; >= 200)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batch-runs", type=int, default=30)
    ap.add_argument("--calib", type=int, default=512, help="FER2013 train crops for static int8 calibration")
    ap.add_argument("--photos", type=int, default=12, help="composite photos for the end-to-end test")
    ap.add_argument("--max-load", type=float, default=2.5, help="wait for the 1-min load average to drop below this")
    ap.add_argument("--max-wait", type=float, default=900, help="seconds to wait for a low load before timing anyway")
    ap.add_argument("--no-timing", action="store_true", help="accuracy only")
    ap.add_argument("--tta", choices=("hflip", "crops"), default="hflip",
                    help="the TTA rows' mode (fairexpr.evaluation.tta): hflip = face + mirror, crops = + five crops (12 views)")
    args = ap.parse_args(argv)
    if args.runs < 200:
        ap.error("--runs must be >= 200")
    if not args.data_root:
        ap.error("--data-root or $FAIREXPR_DATA is required (e.g. /work/shared/data)")
    fer_python = Path(args.fer_python)
    if not fer_python.is_file():
        raise SystemExit(f"fer environment not found at {fer_python}; create it: python3 -m venv benchmarks/.venv-fer && "
                         "benchmarks/.venv-fer/bin/pip install fer==25.10.3 --no-deps ai-edge-litert numpy "
                         "'opencv-python-headless<5' pillow")
    command = "FAIREXPR_DATA=" + shlex.quote(str(args.data_root)) + " .venv/bin/python benchmarks/compare_fer.py " + \
        shlex.join(sys.argv[1:] if argv is None else argv)

    import cv2
    import onnxruntime as ort
    import torch

    from fairexpr.checkpoint import read_json, resolve_checkpoint
    from fairexpr.engine.evaluate import evaluate_checkpoint
    from fairexpr.evaluation.metrics import evaluate
    from fairexpr.evaluation.tta import tta_label
    from fairexpr.inference.export import export_checkpoint
    from fairexpr.inference.pipeline import FacePipeline
    from fairexpr.inference.detect import HaarDetector
    from fairexpr.inference.predictor import OnnxPredictor, TorchPredictor
    from fairexpr.inference.preprocess import Preprocess
    from fairexpr.labels import CANONICAL7, canonical_name

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    data_root = Path(args.data_root)
    from fairexpr.zoo import resolve as zoo_resolve

    ckpt = zoo_resolve(args.checkpoint)
    side = read_json(resolve_checkpoint(ckpt)[1])
    classes = tuple(side["classes"])
    if classes != CANONICAL7:
        raise SystemExit(f"--checkpoint: the comparison needs a 7-class model in the canonical order {CANONICAL7}; "
                         f"{ckpt} has {classes}")
    pre = Preprocess.from_sidecar(side["preprocess"], str(ckpt))
    work = Path(tempfile.mkdtemp(prefix="compare-fer-"))
    t_start = time.time()

    fer_info = worker(fer_python, "info")
    fer_to_canon = [canonical_name(c) for c in fer_info["labels"]]
    perm = [fer_to_canon.index(c) for c in CANONICAL7]  # column of fer's output for each canonical class
    print(f"fer {fer_info['fer_version']} labels {fer_info['labels']} -> canonical columns {perm}", flush=True)
    pye_python = Path(args.pyemotion_python)
    pye_info: dict[str, Any] | None = None
    pye_perm: list[int] = []
    if pye_python.is_file():
        pye_info = worker(pye_python, "info", script=PYEMOTION_WORKER)
        pye_canon = [canonical_name(c) for c in pye_info["labels"]]
        pye_perm = [pye_canon.index(c) for c in CANONICAL7]
        print(f"PyEmotion {pye_info['pyemotion_version']} labels {pye_info['labels']} -> canonical columns {pye_perm}", flush=True)
    else:
        print(f"PyEmotion left out: no environment at {pye_python} (see benchmarks/_pyemotion_worker.py)", flush=True)

    # ---- export (ONNX fp32 + int8 static, calibrated on FER2013 train)
    sets = test_sets(data_root, args.clean_manifest)
    decoded = {}
    for ts in sets:
        decoded[ts["key"]] = native_crops(ts, classes)
        print(f"{ts['name']}: {len(decoded[ts['key']][1])} crops", flush=True)
    calib = pre.batch(calibration_faces(data_root, args.calib))
    parity_faces = pre.batch(list(decoded["fer2013_private"][0][:64]))
    onnx_fp32, onnx_int8 = work / "model.onnx", work / "model.int8.onnx"
    export = export_checkpoint(ckpt, onnx_fp32, int8=True, int8_path=onnx_int8, calibration=calib,
                               parity_batch=parity_faces)
    export["export_api"] = "fairexpr.inference.export.export_checkpoint"
    export["int8_calibration"] = f"{len(calib)} seeded random FER2013 train crops"
    print(f"export: parity {export['parity_max_abs_prob_diff']:.2e}, int8 {export['int8']['mode']}", flush=True)

    # ---- accuracy
    ours = f"fairexpr {side['model']['name']} ({ckpt.name})"
    model_names = {"torch": f"{ours}, PyTorch fp32", "onnx_fp32": f"{ours}, ONNX fp32",
                   "onnx_int8": f"{ours}, ONNX int8 (static QDQ)",
                   "torch_tta": f"{ours}, PyTorch fp32 + {tta_label(args.tta)}",
                   "onnx_int8_tta": f"{ours}, ONNX int8 + {tta_label(args.tta)}",
                   "fer": f"fer {fer_info['fer_version']} mini-Xception (.tflite, LiteRT)"}
    if pye_info is not None:
        model_names["pyemotion"] = f"PyEmotion {pye_info['pyemotion_version']} NetworkV2 (PyTorch)"
    sessions = {"onnx_fp32": OnnxPredictor(onnx_fp32, threads=1), "onnx_int8": OnnxPredictor(onnx_int8, threads=1),
                "onnx_int8_tta": OnnxPredictor(onnx_int8, threads=1, tta=args.tta)}
    acc_rows, per_set = [], {}
    for ts in sets:
        faces, y, info = decoded[ts["key"]]
        m_t = evaluate_checkpoint(ckpt, ts["spec"], ts["split"], options=ts["options"], out_dir=work / "eval" / ts["key"],
                                  progress=False)
        y_t = np.load(work / "eval" / ts["key"] / "predictions.npz")["y_true"]
        if not np.array_equal(y_t, y):
            raise SystemExit(f"{ts['name']}: evaluate_checkpoint saw different labels/order than the crops given to fer")
        res = {"torch": m_t, "torch_tta": evaluate_checkpoint(ckpt, ts["spec"], ts["split"], options=ts["options"],
                                                             out_dir=work / "eval_tta" / ts["key"], progress=False,
                                                             tta=args.tta)}
        for k, sess in sessions.items():
            probs = np.concatenate([sess.predict_faces(list(faces[i:i + 256])).probs for i in range(0, len(faces), 256)])
            res[k] = evaluate(y, probs, classes)
        np.save(work / "faces.npy", faces)
        worker(fer_python, "predict", "--faces", str(work / "faces.npy"), "--out", str(work / "fer_probs.npy"))
        pf = np.load(work / "fer_probs.npy").astype(np.float64)[:, perm]
        res["fer"] = evaluate(y, pf / pf.sum(1, keepdims=True), classes)
        if pye_info is not None:
            worker(pye_python, "predict", "--faces", str(work / "faces.npy"), "--out", str(work / "pye_probs.npy"),
                   script=PYEMOTION_WORKER)
            pp = np.load(work / "pye_probs.npy").astype(np.float64)[:, pye_perm]
            res["pyemotion"] = evaluate(y, pp / pp.sum(1, keepdims=True), classes)
        per_set[ts["key"]] = {"name": ts["name"], "spec": ts["spec"], "split": ts["split"], "options": ts["options"],
                              **info, "n": int(len(y)), "n_per_class": res["fer"]["n_per_class"],
                              "metrics": {k: {kk: v[kk] for kk in ("accuracy", "balanced_accuracy", "macro_f1", "ece",
                                                                    "per_class_accuracy", "worst_class", "absent_classes")}
                                          for k, v in res.items()}}
        for k, v in res.items():
            acc_rows.append({"model": k, "test_set": ts["key"], "n": int(len(y)), "accuracy": v["accuracy"],
                             "balanced_accuracy": v["balanced_accuracy"]})
        print(f"{ts['name']}: " + ", ".join(f"{k} {v['accuracy']:.4f}/{v['balanced_accuracy']:.4f}" for k, v in res.items()),
              flush=True)

    # ---- speed
    speed: dict[str, Any] = {}
    e2e: dict[str, Any] = {}
    if not args.no_timing:
        faces64 = list(decoded["fer2013_private"][0][: args.batch])
        np.save(work / "faces64.npy", np.stack(faces64))
        load_before = wait_for_load(args.max_load, args.max_wait)
        print(f"timing at load {load_before['load_avg_1_5_15']}", flush=True)
        tp = TorchPredictor(ckpt)
        preds = {"torch": tp, "torch_tta": TorchPredictor(ckpt, tta=args.tta), **sessions}
        for k, p in preds.items():
            lat = median_ms(lambda p=p: p.predict_faces(faces64[:1]), args.runs, 30)
            bat = median_ms(lambda p=p: p.predict_faces(faces64), args.batch_runs, 3)
            speed[k] = {"latency_single_face": lat, "batch": {**bat, "batch": args.batch,
                                                              "faces_per_s": args.batch / (bat["median_ms"] / 1e3)}}
        fb = worker(fer_python, "bench", "--faces", str(work / "faces64.npy"), "--runs", str(args.runs),
                    "--batch", str(args.batch), "--batch-runs", str(args.batch_runs))
        speed["fer"] = {"latency_single_face": fb["latency_single_face"], "batch": fb["batched_interpreter"],
                        "packaged_loop": fb["packaged_loop"]}
        if pye_info is not None:
            pb = worker(pye_python, "bench", "--faces", str(work / "faces64.npy"), "--runs", str(args.runs),
                        "--batch", str(args.batch), "--batch-runs", str(args.batch_runs), script=PYEMOTION_WORKER)
            speed["pyemotion"] = {"latency_single_face": pb["latency_single_face"], "batch": pb["batch"]}
        speed["load_after_model_timing"] = load_avg()

        # end-to-end photos/s with detection on composite CK+ photos (same photos for both)
        ck_faces, ck_y, _ = decoded["ckplus48"]
        photos, truth = composite_photos(ck_faces, ck_y, args.photos)
        np.save(work / "photos.npy", photos[..., ::-1].copy())  # fer expects BGR (the photos are grey anyway)
        for k in ("torch", "onnx_fp32", "onnx_int8"):
            pipe = FacePipeline(preds[k], HaarDetector(), batch_size=32)
            dets = [[(list(r.box), classes.index(r.label)) for r in pipe.predict_image(ph) if r.status == "ok"]
                    for ph in photos]
            passes = []
            for _ in range(3):
                t0 = time.perf_counter()
                for ph in photos:
                    pipe.predict_image(ph)
                passes.append(time.perf_counter() - t0)
            e2e[k] = {"photos_per_s": len(photos) / statistics.median(passes), **e2e_summary(truth, dets),
                      "pipeline": "fairexpr.inference.pipeline.FacePipeline(HaarDetector(), margin 0.1)"}
        fe = worker(fer_python, "e2e", "--photos", str(work / "photos.npy"), "--repeats", "3")
        fdets = [[(f["box"], CANONICAL7.index(canonical_name(max(f["emotions"], key=f["emotions"].get))))
                  for f in faces] for faces in fe["faces"]]
        e2e["fer"] = {"photos_per_s": fe["photos_per_s"], **e2e_summary(truth, fdets),
                      "pipeline": "fer.FER(use_tflite=True).detect_emotions (its Haar cascade, min face 50 px)"}
        e2e["photos"] = {"n": len(photos), "size": list(photos.shape[1:3]), "faces_per_photo": len(truth[0]),
                         "face_px": truth[0][0]["box"][2], "source": "CK+48 crops upscaled (bicubic) on a blurred-noise canvas"}
        e2e["load_after"] = load_avg()
        speed["load_before"] = load_before

    # ---- write
    versions = {"torch": torch.__version__, "onnxruntime": ort.__version__, "opencv": cv2.__version__,
                "numpy": np.__version__, "fer": fer_info["fer_version"], "ai_edge_litert": fer_info["ai_edge_litert_version"]}
    if pye_info is not None:
        versions["PyEmotion"] = pye_info["pyemotion_version"]
    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": command,
              "hardware": hardware(), "versions": versions, "threads": 1, "tta": args.tta, "checkpoint": str(ckpt),
              "checkpoint_model": side["model"], "checkpoint_preprocess": pre.to_dict(),
              "fer": {**fer_info, "class_order": fer_info["labels"], "to_canonical_columns": perm,
                      "preprocessing": "cv2.resize(crop, (64, 64)) [bilinear] -> /255 -> (x - 0.5) * 2 -> [1, 64, 64, 1] "
                                       "float32 (fer.py lines 376, 386-389); one invoke per face (lines 201-216)"},
              "pyemotion": ({**pye_info, "class_order": pye_info["labels"], "to_canonical_columns": pye_perm} if pye_info
                            else {"left_out": f"no environment at {pye_python}"}),
              "models": model_names, "export": export, "test_sets": per_set, "accuracy": acc_rows,
              "speed": speed, "end_to_end": e2e, "seconds": round(time.time() - t_start, 1)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from fairexpr.checkpoint import atomic_write_bytes

    atomic_write_bytes(out / "compare_fer.json", json.dumps(result, indent=1, default=float).encode())
    atomic_write_bytes(out / "compare_fer.md", markdown(result).encode())
    print(f"wrote {out / 'compare_fer.json'} and {out / 'compare_fer.md'}", flush=True)
    for f in sorted(work.rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    work.rmdir()
    return 0


def markdown(r: dict[str, Any]) -> str:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    sp, e2e, hw = r["speed"], r["end_to_end"], r["hardware"]
    lines = [
        "# fairexpr vs `fer` (mini-Xception .tflite)" + (" and PyEmotion" if "pyemotion" in r["models"] else ""),
        "",
        f"Date: {r['date']}  ",
        f"Hardware: {hw['cpu']}, {hw['logical_cpus']} logical CPUs, {hw['memory_gib']} GiB; all timings with 1 thread "
        f"({', '.join(f'{k} {v}' for k, v in r['versions'].items())})  ",
    ]
    if sp:
        lb = sp["load_before"]
        lines.append(f"Load average (1/5/15 min) at the start of timing: {lb['load_avg_1_5_15']}"
                     f"{'' if lb['below_threshold'] else ' (ABOVE the ' + str(lb['threshold']) + ' threshold: timings are pessimistic)'}; "
                     f"after the model timings: {sp['load_after_model_timing']}; after end-to-end: {e2e.get('load_after')}  ")
    lines += [f"Command: `{r['command']}`", "", "| model | test set | n | accuracy % | balanced accuracy % | faces/s (batch 64) | latency ms (1 face) |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for row in r["accuracy"]:
        s = sp.get(row["model"])
        fps = f"{s['batch']['faces_per_s']:.0f}" if s else "–"
        lat = f"{s['latency_single_face']['median_ms']:.2f}" if s else "–"
        lines.append(f"| {r['models'][row['model']]} | {r['test_sets'][row['test_set']]['name']} | {row['n']} | "
                     f"{pct(row['accuracy'])} | {pct(row['balanced_accuracy'])} | {fps} | {lat} |")
    lines += ["", "Faces/s: one batch of 64 FER2013 crops, uint8 crop -> probabilities (each model's preprocessing "
              "included), median of repeated runs. Latency: one crop, median of "
              f"{sp['torch']['latency_single_face']['runs'] if sp else '–'} runs."]
    if sp:
        pl = sp["fer"]["packaged_loop"]
        lines.append(f"fer's own `_classify_emotions` invokes the interpreter once per face: {pl['faces_per_s']:.0f} faces/s "
                     "on the same 64 faces (the table shows the same .tflite with its input resized to the batch, "
                     f"max prob. difference {sp['fer']['batch']['max_abs_prob_diff_vs_packaged']:.1e}).")
    if e2e:
        ph = e2e["photos"]
        lines += ["", f"End-to-end with detection ({ph['n']} photos {ph['size'][1]}x{ph['size'][0]}, {ph['faces_per_photo']} "
                      f"faces each: {ph['source']}, {ph['face_px']} px):", "",
                  "| model | pipeline | photos/s | faces found | false/duplicate detections | accuracy on found faces % |",
                  "|---|---|---:|---:|---:|---:|"]
        for k in ("torch", "onnx_fp32", "onnx_int8", "fer"):
            v = e2e[k]
            a = "–" if v["accuracy_on_found"] is None else pct(v["accuracy_on_found"])
            lines.append(f"| {r['models'][k]} | {v['pipeline']} | {v['photos_per_s']:.1f} | {v['faces_found']}/{v['faces_pasted']} | "
                         f"{v['false_or_duplicate_detections']} | {a} |")
    ex = r["export"]
    lines += ["", "Notes:", "",
              f"- Same crops for every model: each set is decoded once at its native 48x48 grayscale; our models apply the "
              f"checkpoint's preprocessing {r['checkpoint_preprocess']}, fer applies its own: {r['fer']['preprocessing']}. "
              f"fer's class order {r['fer']['class_order']} is mapped to the canonical order.",
              ("- Crop TTA rows: the mean of the probabilities of twelve views of each crop — the crop, five crops of 95 % "
               "of its side (centre, four corners) resized back, and the mirrors of all six (`fairexpr eval --tta crops`, "
               "`fairexpr.evaluation.tta`; the view set chosen on FER2013 PublicTest, `benchmarks/results/tta_views_default.md`); "
               "same checkpoint as the rows without it." if r.get("tta", "hflip") == "crops" else
               "- Flip TTA rows: the mean of the probabilities of each crop and its mirror (two forward passes; "
               "`fairexpr eval --tta hflip`, `fairexpr.evaluation.tta`); same checkpoint as the rows without it."),
              (f"- PyEmotion: {r['pyemotion']['preprocessing']}; class order {r['pyemotion']['class_order']} mapped to the "
               "canonical order; its scores are exp(sigmoid) of its outputs, normalised (the package reports only the argmax, "
               "so its ECE is not meaningful); the batch path is checked against its own `DetectFace._predict`."
               if "pyemotion" in r["models"] else f"- PyEmotion left out: {r['pyemotion']['left_out']}."),
              "- CK+ has no neutral class: its balanced accuracy averages the 6 present classes, and a neutral prediction "
              "counts as an error. Contempt (not in the 7-class space) is dropped.",
              f"- ONNX: `{ex['export_api']}`, fp32 parity vs PyTorch {ex['parity_max_abs_prob_diff']:.1e} (tolerance "
              f"{ex['parity_tolerance']:.0e}); int8 = {ex['int8']['mode']} quantization calibrated on "
              f"{ex['int8_calibration']}.",
              "- fer's published figures (65.9 / 64.1 % FER2013 PrivateTest, 67.5 / 65.0 % FER+ test, 0.7 ms per face) "
              "come from its own machine; the numbers above are measured here, on the same crops and machine.",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
