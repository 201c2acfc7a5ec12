"""Worker for ``benchmarks/compare_fer.py``: runs the ``PyEmotion`` package's own model in its own environment.

``PyEmotion`` 1.0.0 (MIT; the same network and weights as ``facial-emotion-recognition``) ships its FER model
inside its wheel: ``PyEmotion/model/main_model.pkl`` (a legacy ``torch.save`` of ``{'network': state_dict}``)
for ``NetworkV2(in_c=1, nl=32, out_f=7)`` — four reflection-padded conv-BN-ReLU blocks, then
``Linear(9216, 256)``-ReLU-``Linear(256, 7)``-Sigmoid. Its classifier, ``DetectFace._predict`` (``main.py``):
grey crop -> ``ToPILImage`` -> ``Resize((48, 48))`` -> ``ToTensor`` -> ``Normalize(0.5, 0.5)`` -> network ->
``torch.exp(output)`` -> argmax over ``{0: Angry, 1: Disgust, 2: Fear, 3: Happy, 4: Sad, 5: Surprise,
6: Neutral}``. This worker runs exactly that for each crop through ``DetectFace`` itself (its MTCNN detector
is built as the package does but not used: the comparison gives every model the same crops).

Environment (``benchmarks/.venv-pyemotion``)::

    python3 -m venv benchmarks/.venv-pyemotion
    benchmarks/.venv-pyemotion/bin/pip install torch torchvision
    benchmarks/.venv-pyemotion/bin/pip install PyEmotion==1.0.0 facenet-pytorch==2.6.0 --no-deps
    benchmarks/.venv-pyemotion/bin/pip install art termcolor opencv-python-headless pillow numpy requests tqdm

(``--no-deps``: PyEmotion pins ``opencv-python`` and ``pytest``, facenet-pytorch pins old torch versions; none of
that is needed to run the classifier.) Exchange with the caller is through ``.npy``/``.json`` files only.
Sub-commands::

    info                                  -> JSON: versions, model file + sha256, label order
    predict --faces F.npy --out P.npy     -> scores [N, 7] in PyEmotion's class order (exp(sigmoid) normalised
                                             to sum 1: the package reports only the argmax)
    bench   --faces F.npy --json B.json   -> single-face latency (its _predict) and faces/s on a batch

``F.npy``: uint8 grey face crops ``[N, H, W]``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fer_worker import _median_ms  # noqa: E402  (stdlib + numpy only: importable in this environment too)

THREADS = int(os.environ.get("FER_WORKER_THREADS", "1"))


def _load() -> Any:
    """``PyEmotion.DetectFace('cpu')``. The package calls ``torch.load`` on its own bundled file without
    ``weights_only``; PyTorch >= 2.6 defaults to ``weights_only=True``, which reads this plain state-dict file
    too — if a future version refuses it, the error is reported, never bypassed."""
    import torch

    torch.set_num_threads(THREADS)
    import PyEmotion.main as pm

    return pm.DetectFace(device="cpu")


def _model_file() -> Path:
    import PyEmotion

    return Path(PyEmotion.__file__).parent / "model" / "main_model.pkl"


def _scores(det: Any, faces: np.ndarray) -> np.ndarray:
    """The package's ``_predict`` steps for a batch: per-crop transform (its ``self.transform``), one forward,
    ``exp`` of the sigmoid outputs."""
    import torch

    x = torch.stack([det.transform(f) for f in faces])
    with torch.no_grad():
        return torch.exp(det.network(x)).numpy()


def cmd_info(args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version

    import torch

    det = _load()
    path = _model_file()
    return {"pyemotion_version": version("PyEmotion"), "torch_version": torch.__version__, "python": sys.version.split()[0],
            "model_file": str(path), "model_bytes": path.stat().st_size,
            "model_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "parameters": int(sum(p.numel() for p in det.network.parameters())),
            "labels": [det.emotions[i] for i in range(7)], "threads": THREADS,
            "preprocessing": "ToPILImage -> Resize((48, 48)) -> ToTensor -> Normalize([0.5], [0.5]) (PyEmotion/main.py)"}


def cmd_predict(args: argparse.Namespace) -> dict[str, Any]:
    faces = np.load(args.faces)
    det = _load()
    t0 = time.perf_counter()
    s = np.concatenate([_scores(det, faces[i:i + 256]) for i in range(0, len(faces), 256)])
    dt = time.perf_counter() - t0
    # the batch path must give the package's own per-face answers
    check = min(len(faces), 64)
    own = [det._predict(f) for f in faces[:check]]
    agree = float(np.mean([det.emotions[int(i)] == o for i, o in zip(s[:check].argmax(1), own)]))
    if agree < 1.0:
        raise SystemExit(f"batched scores disagree with PyEmotion's _predict on {100 * (1 - agree):.1f} % of {check} faces")
    np.save(args.out, (s / s.sum(1, keepdims=True)).astype(np.float32))
    return {"n": int(len(faces)), "seconds": dt, "labels": [det.emotions[i] for i in range(7)],
            "checked_against_package_predict": check}


def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    faces = np.load(args.faces)
    det = _load()
    batch = faces[: args.batch]
    if len(batch) < args.batch:
        raise SystemExit(f"bench: need {args.batch} faces, got {len(faces)}")
    lat = _median_ms(lambda: _scores(det, faces[:1]), args.runs, args.warmup)
    bat = _median_ms(lambda: _scores(det, batch), args.batch_runs, 3)
    return {"threads": THREADS, "latency_single_face": lat,
            "batch": {**bat, "batch": args.batch, "faces_per_s": args.batch / (bat["median_ms"] / 1e3)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("info")
    p = sub.add_parser("predict")
    p.add_argument("--faces", required=True)
    p.add_argument("--out", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--faces", required=True)
    b.add_argument("--runs", type=int, default=300)
    b.add_argument("--warmup", type=int, default=30)
    b.add_argument("--batch", type=int, default=64)
    b.add_argument("--batch-runs", type=int, default=30)
    for q in (i, p, b):
        q.add_argument("--json", default=None, help="write the result here (default: stdout)")
    args = ap.parse_args(argv)
    res = {"info": cmd_info, "predict": cmd_predict, "bench": cmd_bench}[args.cmd](args)
    text = json.dumps(res, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
