"""Inference throughput and latency of one checkpoint: PyTorch vs ONNX fp32 vs ONNX int8 (+ photos/s with detection).

    python benchmarks/bench_inference.py --checkpoint RUNS/best --faces folder:../shared/data/ckplus/CK+48 \
        [--photos DIR] [--out benchmarks/results/inference.json]

Faces/s uses batches of ``--batch`` faces with all threads given; single-face latency is the median over
``--reps`` calls with 1 thread (``torch.set_num_threads(1)``, onnxruntime ``intra_op_num_threads=1``).
int8 is static QDQ quantization calibrated on ``--calib-n`` faces of ``--faces``. Results are written as
JSON with the hardware (CPU model, cores) and library versions.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from fairexpr._io import atomic_write_text


def _timeit(fn, reps: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--faces", required=True, help="FORMAT:PATH of face crops (e.g. folder:.../CK+48)")
    ap.add_argument("--split", default=None)
    ap.add_argument("--photos", help="folder of photos for end-to-end photos/s with Haar detection")
    ap.add_argument("--n", type=int, default=512, help="faces for the throughput run")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--calib-n", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default="benchmarks/results/inference.json")
    a = ap.parse_args()

    import onnxruntime as ort
    import torch

    from fairexpr.cli.export import load_faces
    from fairexpr.inference import FacePipeline, OnnxPredictor, TorchPredictor, decode_rgb
    from fairexpr.inference.export import export_checkpoint

    tp = TorchPredictor(a.checkpoint)
    faces, _, _ = load_faces(a.faces, a.split, tp.classes, a.n)
    x = tp.preprocess.batch(faces)
    work = Path(tempfile.mkdtemp(prefix="fairexpr-bench-"))
    calib = tp.preprocess.batch(load_faces(a.faces, a.split, tp.classes, a.calib_n, seed=1)[0])
    rep = export_checkpoint(a.checkpoint, work / "fp32.onnx", int8=True, calibration=calib)
    paths = {"onnx_fp32": rep["onnx"], "onnx_int8": rep["int8"]["onnx"]}

    def predictors(threads: int):
        torch.set_num_threads(threads)
        return {"torch": tp, **{k: OnnxPredictor(p, threads=threads) for k, p in paths.items()}}

    results = {}
    for name, pred in predictors(a.threads).items():
        ts = _timeit(lambda: [pred.predict_batch(x[i:i + a.batch]) for i in range(0, len(x), a.batch)], 3)
        results[name] = {"faces_per_s": len(x) / min(ts)}
    for name, pred in predictors(1).items():
        lat = _timeit(lambda: pred.predict_batch(x[:1]), a.reps)
        results[name]["latency_ms_median_1thread"] = 1000 * statistics.median(lat)
    if a.photos:
        photos = sorted(p for p in Path(a.photos).rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
        imgs = [decode_rgb(p) for p in photos]
        for name, pred in predictors(a.threads).items():
            pipe = FacePipeline(pred, "haar")
            t = time.perf_counter()
            for _ in pipe.run((im, "p", None, None) for im in imgs):
                pass
            results[name]["photos_per_s_with_detection"] = len(imgs) / (time.perf_counter() - t)
    out = {"checkpoint": a.checkpoint, "model": rep["model"], "faces": a.faces, "n_faces": int(len(x)),
           "batch": a.batch, "threads": a.threads, "parity_max_abs_prob_diff": rep["parity_max_abs_prob_diff"],
           "int8_max_abs_prob_diff_vs_fp32": rep["int8"]["max_abs_prob_diff_vs_fp32"],
           "onnx_bytes": {"fp32": rep["bytes"], "int8": rep["int8"]["bytes"]}, "results": results,
           "hardware": {"cpu": _cpu(), "cores": os.cpu_count()},
           "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "python": platform.python_version()}}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(a.out), json.dumps(out, indent=2))
    print("| path | faces/s | latency 1 face (ms, 1 thread) |\n|---|---|---|")
    for k, r in results.items():
        print(f"| {k} | {r['faces_per_s']:.0f} | {r['latency_ms_median_1thread']:.2f} |")
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
