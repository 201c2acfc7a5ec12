"""ONNX export with dynamic batch, PyTorch parity check, and int8 quantization (onnxruntime).

The exported file is self-describing: classes, preprocessing, temperature and the model's name travel in
its ``metadata_props`` (keys in :mod:`fairexpr.inference.predictor`), so ``predict --onnx`` and
``serve --onnx`` need nothing else — and no torch.
"""
from __future__ import annotations

import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..data.base import DataError
from .predictor import (META_CLASSES, META_FORMAT, META_INFERENCE, META_MODEL, META_PREPROCESS, META_TEMPERATURE, ONNX_FORMAT,
                        OnnxPredictor, softmax)
from .preprocess import Preprocess

DEFAULT_OPSET = 17
PARITY_TOL = 1e-4


class ExportError(DataError):
    """A model that cannot be exported to ONNX (unsupported operator, tracing failure...)."""


def export_onnx(model: Any, sidecar: Mapping[str, Any], path: str | Path, *, opset: int = DEFAULT_OPSET,
                temperature: float | None = None) -> Path:
    """Export ``model`` (eval mode, CPU) with a dynamic batch axis and fairexpr metadata; returns the path.

    The input is ``input`` ``float32 [batch, C, H, W]``, the output ``logits`` ``[batch, K]``.
    """
    import onnx
    import torch

    pre = Preprocess.from_sidecar(sidecar.get("preprocess"), "sidecar")
    inference = None
    if sidecar.get("inference"):
        # the recommended TTA mode travels with the file, so `predict --onnx` (default --tta auto) uses it too;
        # checked before the (slow) export
        from ..evaluation.tta import recommended_tta

        try:
            inference = json.dumps({"tta": recommended_tta(sidecar, "sidecar")})
        except ValueError as e:
            raise ExportError(str(e)) from None
    classes = list(sidecar["classes"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    dummy = torch.zeros(2, pre.in_chans, *pre.input_size)
    tmp = Path(tempfile.mkdtemp(prefix="fairexpr-export-")) / "model.onnx"
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # legacy-exporter deprecation + tracer warnings on shape checks
            torch.onnx.export(model, (dummy,), str(tmp), input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                              dynamo=False)
        proto = onnx.load(str(tmp))
    except Exception as e:
        raise ExportError(f"model {sidecar.get('model', {}).get('name', '?')!r} cannot be exported to ONNX "
                          f"({type(e).__name__}: {str(e).strip().splitlines()[0][:300]})") from None
    finally:
        for f in tmp.parent.iterdir():
            f.unlink()
        tmp.parent.rmdir()
    t = temperature if temperature is not None else sidecar.get("temperature", 1.0)
    meta = {META_FORMAT: ONNX_FORMAT, META_CLASSES: json.dumps(classes), META_PREPROCESS: json.dumps(pre.to_dict()),
            META_TEMPERATURE: repr(float(t if t is not None else 1.0)),
            META_MODEL: json.dumps({k: sidecar["model"].get(k) for k in ("name", "num_classes", "kwargs")}
                                   if "model" in sidecar else {})}
    if inference is not None:
        meta[META_INFERENCE] = inference
    set_metadata(proto, meta)
    _atomic_save(proto, path)
    return path


def set_metadata(proto: Any, meta: Mapping[str, str]) -> None:
    """Replace/add ``metadata_props`` entries on an ``onnx.ModelProto`` in place."""
    keep = [p for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    for p in keep:
        proto.metadata_props.add(key=p.key, value=p.value)
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=str(v))


def _atomic_save(proto: Any, path: Path) -> None:
    import onnx

    from ..checkpoint import atomic_write_bytes

    atomic_write_bytes(path, proto.SerializeToString())
    onnx.checker.check_model(str(path))


def parity(model: Any, onnx_path: str | Path, batch: np.ndarray, temperature: float = 1.0) -> float:
    """``max |softmax(z_torch / T) - softmax(z_onnx / T)|`` over a batch (float64 comparison)."""
    import torch

    with torch.inference_mode():
        zt = model.eval()(torch.from_numpy(np.asarray(batch, np.float32))).float().numpy()
    zo = OnnxPredictor(onnx_path).logits(np.asarray(batch, np.float32))
    return float(np.abs(softmax(zt, temperature) - softmax(zo, temperature)).max())


def quantize_int8(src: str | Path, dst: str | Path, calibration: np.ndarray | None = None) -> Path:
    """int8 quantization with onnxruntime; fairexpr metadata is carried over.

    With ``calibration`` (preprocessed faces ``float32 [N, C, H, W]``): static QDQ quantization
    (per-channel weights, MinMax activation ranges from those faces) — what convolutional networks need.
    Without: dynamic quantization (int8 weights, activations quantized on the fly).
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise DataError(f"ONNX file {str(src)!r} not found")
    work = Path(tempfile.mkdtemp(prefix="fairexpr-quant-"))
    try:
        pre = work / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimisation; quantize the original if it fails
            pre = src
        out = work / "q.onnx"
        if calibration is not None:
            calib = np.asarray(calibration, np.float32)
            if calib.ndim != 4 or len(calib) == 0:
                raise DataError(f"int8 calibration data must be a non-empty [N, C, H, W] array, got {calib.shape}")

            class _Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    self.it = iter([{"input": calib[i:i + 16]} for i in range(0, len(calib), 16)])

                def get_next(self) -> dict[str, np.ndarray] | None:
                    return next(self.it, None)

            quantize_static(str(pre), str(out), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        else:
            quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8)
        proto = onnx.load(str(out))
        meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
        meta["fairexpr.quantization"] = "int8-static-qdq" if calibration is not None else "int8-dynamic"
        set_metadata(proto, meta)
        _atomic_save(proto, dst)
    finally:
        for f in work.iterdir():
            f.unlink()
        work.rmdir()
    return dst


def export_checkpoint(checkpoint: str | Path, onnx_path: str | Path, *, int8: bool = False,
                      int8_path: str | Path | None = None, calibration: np.ndarray | None = None,
                      opset: int = DEFAULT_OPSET, parity_batch: np.ndarray | None = None) -> dict[str, Any]:
    """Export a checkpoint, check fp32 parity on ``parity_batch`` (random faces when None) and optionally
    write an int8 copy (``<stem>.int8.onnx`` unless ``int8_path``). Returns a JSON-ready report."""
    from ..checkpoint import load_model

    model, side = load_model(checkpoint)
    t0 = time.perf_counter()
    path = export_onnx(model, side, onnx_path, opset=opset)
    pre = Preprocess.from_sidecar(side["preprocess"])
    if parity_batch is None:
        parity_batch = np.random.default_rng(0).normal(size=(8, pre.in_chans, *pre.input_size)).astype(np.float32)
    temp = float(side.get("temperature", 1.0) or 1.0)
    rep: dict[str, Any] = {"checkpoint": str(checkpoint), "onnx": str(path), "model": side["model"]["name"],
                           "opset": opset, "temperature": temp, "bytes": path.stat().st_size,
                           "parity_max_abs_prob_diff": parity(model, path, parity_batch, temp),
                           "parity_tolerance": PARITY_TOL, "seconds": round(time.perf_counter() - t0, 3)}
    rep["parity_ok"] = rep["parity_max_abs_prob_diff"] <= PARITY_TOL
    if int8:
        q = Path(int8_path) if int8_path else path.with_name(path.stem + ".int8.onnx")
        quantize_int8(path, q, calibration)
        rep["int8"] = {"onnx": str(q), "bytes": q.stat().st_size,
                       "mode": "static" if calibration is not None else "dynamic",
                       "max_abs_prob_diff_vs_fp32": float(np.abs(OnnxPredictor(q).predict_batch(parity_batch).probs
                                                                 - OnnxPredictor(path).predict_batch(parity_batch).probs).max())}
    return rep


def check_registered_models(out_dir: str | Path, names: Sequence[str] | None = None, num_classes: int = 7,
                            batch: int = 3) -> list[dict[str, Any]]:
    """Try export + fp32 parity for every registered architecture (or ``names``).

    Each entry: ``{"model", "exportable", "max_abs_prob_diff", "parity_ok"}`` or ``{"model", "exportable":
    False, "reason"}`` naming why (e.g. an operator without an ONNX symbolic).
    """
    import torch

    from ..models import create_model, list_models

    out_dir = Path(out_dir)
    rows = []
    for name in names or list(list_models()):
        try:
            model = create_model(name, num_classes=num_classes).eval()
        except Exception as e:
            rows.append({"model": name, "exportable": False, "reason": f"cannot build with defaults: {e}"})
            continue
        cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
        size = cfg.get("input_size", (112, 112))
        size = list(size[-2:]) if isinstance(size, (list, tuple)) else [int(size)] * 2
        side = {"model": {"name": name, "num_classes": num_classes, "kwargs": {}},
                "classes": [f"c{i}" for i in range(num_classes)],
                "preprocess": {"input_size": size, "in_chans": int(cfg.get("in_chans", 3)),
                               "mean": cfg.get("mean", [0.5]), "std": cfg.get("std", [0.5])}}
        try:
            torch.manual_seed(0)
            path = export_onnx(model, side, out_dir / f"{name}.onnx")
            x = np.random.default_rng(0).normal(size=(batch, side["preprocess"]["in_chans"], *size)).astype(np.float32)
            d = parity(model, path, x)
            rows.append({"model": name, "exportable": True, "max_abs_prob_diff": d, "parity_ok": d <= PARITY_TOL})
        except ExportError as e:
            rows.append({"model": name, "exportable": False, "reason": str(e)})
    return rows
