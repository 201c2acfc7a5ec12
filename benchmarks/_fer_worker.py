"""Worker for ``benchmarks/compare_fer.py``: runs the ``fer`` package's own code in its own environment.

Run by ``benchmarks/.venv-fer/bin/python`` (``fer==25.10.3 --no-deps`` + ``ai-edge-litert`` + numpy,
opencv-python-headless, pillow), never by the project's interpreter. ``fer/fer.py`` imports
``tensorflow`` (for ``tf.lite.Interpreter`` and the Keras loader) and ``requests`` (TF-Serving only) at
module level; neither is installed here. Two small import shims stand in for them: ``tensorflow.lite.
Interpreter`` is ``ai_edge_litert.interpreter.Interpreter`` pinned to ``num_threads`` (1 by default), and
the Keras loader / ``requests`` raise if ever called. Everything else — the bundled
``data/emotion_model_quantized.tflite``, ``FER._classify_emotions`` (one ``invoke`` per face), and
``FER.detect_emotions`` (Haar cascade, padding, square box, offsets, resize, scaling) — is fer's code.

Exchange with the caller is through ``.npy``/``.json`` files only, so neither side imports the other's
libraries. Sub-commands::

    info                                  -> JSON: versions, model file + sha256, tensor specs, label order
    predict --faces F.npy --out P.npy     -> probabilities [N, 7] in fer's class order
    bench   --faces F.npy --json B.json   -> single-face latency and batch throughput
    e2e     --photos X.npy --json E.json  -> photos/s and per-face results of FER.detect_emotions

``F.npy``: uint8 face crops ``[N, H, W]`` (grayscale, any size: fer resizes them). ``X.npy``: uint8 BGR
photos ``[M, H, W, 3]``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

THREADS = int(os.environ.get("FER_WORKER_THREADS", "1"))


def _install_shims(threads: int) -> None:
    """Make ``import fer.fer`` work with LiteRT instead of TensorFlow (see module docstring)."""
    from ai_edge_litert.interpreter import Interpreter as _LiteRT

    class Interpreter(_LiteRT):  # what fer.py line 158 builds as tf.lite.Interpreter(model_path=...)
        def __init__(self, model_path: str | None = None, **kw: Any) -> None:
            kw.setdefault("num_threads", threads)
            super().__init__(model_path=model_path, **kw)

    def _no_keras(*a: Any, **k: Any) -> Any:
        raise RuntimeError("the Keras model path of fer is not available in this benchmark environment (LiteRT only)")

    tf = types.ModuleType("tensorflow")
    tf.lite = types.SimpleNamespace(Interpreter=Interpreter)  # type: ignore[attr-defined]
    keras = types.ModuleType("tensorflow.keras")
    models = types.ModuleType("tensorflow.keras.models")
    models.load_model = _no_keras  # type: ignore[attr-defined]
    keras.models = models  # type: ignore[attr-defined]
    tf.keras = keras  # type: ignore[attr-defined]
    sys.modules.update({"tensorflow": tf, "tensorflow.keras": keras, "tensorflow.keras.models": models})
    if "requests" not in sys.modules:
        try:
            import requests  # noqa: F401
        except ImportError:
            req = types.ModuleType("requests")

            def _no_net(*a: Any, **k: Any) -> Any:
                raise RuntimeError("network access (requests) is disabled in the fer benchmark worker")

            req.get = req.post = _no_net  # type: ignore[attr-defined]
            sys.modules["requests"] = req


def _fer(threads: int = THREADS):
    import cv2

    cv2.setNumThreads(threads)
    _install_shims(threads)
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*pkg_resources.*")
    from fer.fer import FER

    logging.getLogger("fer").setLevel(logging.WARNING)
    FER._tflite_interpreter_cache = None
    return FER(use_tflite=True)


def model_path() -> Path:
    import fer

    return Path(fer.__file__).parent / "data" / "emotion_model_quantized.tflite"


def preprocess(faces: np.ndarray, size: tuple[int, int] = (64, 64)) -> np.ndarray:
    """fer's preprocessing of gray face crops (fer.py lines 376, 386-389): ``cv2.resize`` to 64x64 with
    OpenCV's default bilinear interpolation, ``x / 255``, then ``(x - 0.5) * 2`` -> float32 in [-1, 1]."""
    import cv2

    out = np.empty((len(faces), size[1], size[0]), np.float32)
    for i, f in enumerate(faces):
        out[i] = cv2.resize(f, size)
    out /= 255.0
    out = (out - 0.5) * 2.0
    return out


def _labels(model: Any) -> list[str]:
    return [model._get_labels()[i] for i in range(7)]


def cmd_info(args: argparse.Namespace) -> dict[str, Any]:
    import ai_edge_litert
    import cv2
    import fer

    m = _fer()
    it = m._FER__tflite_interpreter
    spec = lambda d: {"name": d["name"], "shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name}  # noqa: E731
    path = model_path()
    from importlib.metadata import version

    return {"fer_version": fer.__version__, "ai_edge_litert_version": version("ai-edge-litert"),
            "litert_module": ai_edge_litert.__name__, "opencv_version": cv2.__version__, "numpy_version": np.__version__,
            "python": sys.version.split()[0], "model_file": str(path), "model_bytes": path.stat().st_size,
            "model_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "input": [spec(d) for d in it.get_input_details()], "output": [spec(d) for d in it.get_output_details()],
            "labels": _labels(m), "emotion_target_size": list(m._FER__emotion_target_size), "threads": THREADS}


def cmd_predict(args: argparse.Namespace) -> dict[str, Any]:
    faces = np.load(args.faces)
    m = _fer()
    x = preprocess(faces, tuple(m._FER__emotion_target_size))
    t0 = time.perf_counter()
    probs = np.asarray(m._classify_emotions(x), np.float32).reshape(len(faces), -1)
    dt = time.perf_counter() - t0
    np.save(args.out, probs)
    return {"n": int(len(faces)), "seconds": dt, "labels": _labels(m)}


def _median_ms(fn, runs: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return {"median_ms": 1e3 * statistics.median(ts), "p90_ms": 1e3 * float(np.percentile(ts, 90)), "runs": runs}


def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Latency of one face (crop -> probabilities, fer's preprocessing included) and faces/s on a batch of
    ``--batch`` crops two ways: fer's packaged loop (``_classify_emotions``: one invoke per face) and the
    same .tflite with its input resized to the whole batch (one invoke)."""
    from ai_edge_litert.interpreter import Interpreter

    faces = np.load(args.faces)
    m = _fer()
    size = tuple(m._FER__emotion_target_size)
    one = faces[:1]
    batch = faces[: args.batch]
    if len(batch) < args.batch:
        raise SystemExit(f"bench: need {args.batch} faces, got {len(faces)}")
    lat = _median_ms(lambda: m._classify_emotions(preprocess(one, size)), args.runs, args.warmup)
    loop = _median_ms(lambda: m._classify_emotions(preprocess(batch, size)), args.batch_runs, 3)
    it = Interpreter(model_path=str(model_path()), num_threads=THREADS)
    inp, outp = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    it.resize_tensor_input(inp, [args.batch, size[1], size[0], 1])
    it.allocate_tensors()

    def batched() -> np.ndarray:
        it.set_tensor(inp, preprocess(batch, size)[..., None])
        it.invoke()
        return it.get_tensor(outp)

    # the batched interpreter must give fer's per-face answers
    diff = float(np.abs(batched() - np.asarray(m._classify_emotions(preprocess(batch, size)))).max())
    bat = _median_ms(batched, args.batch_runs, 3)
    return {"threads": THREADS, "latency_single_face": lat,
            "packaged_loop": {**loop, "batch": args.batch, "faces_per_s": args.batch / (loop["median_ms"] / 1e3)},
            "batched_interpreter": {**bat, "batch": args.batch, "faces_per_s": args.batch / (bat["median_ms"] / 1e3),
                                    "max_abs_prob_diff_vs_packaged": diff}}


def cmd_e2e(args: argparse.Namespace) -> dict[str, Any]:
    """``FER.detect_emotions`` (fer's defaults: its Haar cascade, scaleFactor 1.1, minNeighbors 5, min face
    50 px) on every photo, ``--repeats`` passes; photos/s from the median pass."""
    photos = np.load(args.photos)
    m = _fer()
    results = [m.detect_emotions(p) for p in photos]
    passes = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for p in photos:
            m.detect_emotions(p)
        passes.append(time.perf_counter() - t0)
    med = statistics.median(passes)
    faces = [[{"box": [int(v) for v in r["box"]], "emotions": r["emotions"]} for r in res] for res in results]
    return {"threads": THREADS, "photos": int(len(photos)), "repeats": args.repeats, "median_pass_s": med,
            "photos_per_s": len(photos) / med, "faces": faces, "labels": _labels(m)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info")
    p = sub.add_parser("predict")
    p.add_argument("--faces", required=True)
    p.add_argument("--out", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--faces", required=True)
    b.add_argument("--runs", type=int, default=300)
    b.add_argument("--warmup", type=int, default=30)
    b.add_argument("--batch", type=int, default=64)
    b.add_argument("--batch-runs", type=int, default=30)
    e = sub.add_parser("e2e")
    e.add_argument("--photos", required=True)
    e.add_argument("--repeats", type=int, default=3)
    for q in (b, e, sub.choices["info"]):
        q.add_argument("--json", default=None, help="write the result here (default: stdout)")
    p.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    res = {"info": cmd_info, "predict": cmd_predict, "bench": cmd_bench, "e2e": cmd_e2e}[args.cmd](args)
    text = json.dumps(res, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
