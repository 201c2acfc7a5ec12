"""`fairexpr export`: checkpoint -> self-describing ONNX (dynamic batch), fp32 parity check, optional int8."""
from __future__ import annotations

from typing import Any

import click
import numpy as np

from .common import UserError, checkpoint_option, emit, json_option, resolve_checkpoint_arg


def load_faces(spec: str, split: str | None, classes: tuple[str, ...], limit: int | None = None,
               seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Face crops (RGB uint8) and labels re-indexed into ``classes`` from a dataset split; samples whose
    class the model lacks are left out. ``limit`` draws a seeded random subset."""
    from ..data.base import DataError, FERDataset

    ds = FERDataset.from_spec(spec, split, mode="RGB")
    idx = [i for i, s in enumerate(ds.samples) if s.label >= 0 and ds.classes[s.label] in classes]
    if not idx:
        raise DataError(f"{spec} [{split}]: no labelled images in the model's classes {list(classes)}")
    if limit is not None and len(idx) > limit:
        idx = sorted(np.random.default_rng(seed).choice(idx, size=limit, replace=False).tolist())
    faces = [np.asarray(ds.load_image(i)) for i in idx]
    labels = np.array([classes.index(ds.classes[ds.samples[i].label]) for i in idx], np.int64)
    return faces, labels


@click.command("export")
@checkpoint_option()
@click.option("--onnx", "onnx_file", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click.option("--opset", type=int, default=17, show_default=True)
@click.option("--int8", is_flag=True, help="Also write an int8-quantized copy (<stem>.int8.onnx).")
@click.option("--int8-out", type=click.Path(dir_okay=False), help="Path of the int8 copy.")
@click.option("--calib-data", help="FORMAT:PATH of faces for static int8 calibration (dynamic quantization without).")
@click.option("--calib-split", default=None, help="Split of --calib-data (e.g. train).")
@click.option("--calib-n", type=int, default=256, show_default=True, help="Calibration faces (seeded subset).")
@click.option("--eval-data", help="FORMAT:PATH to measure the accuracy of fp32 vs int8 on (e.g. a test split).")
@click.option("--eval-split", default=None, help="Split of --eval-data.")
@click.option("--eval-n", type=int, default=None, help="Evaluate on a seeded subset of this size.")
@json_option
def command(checkpoint, onnx_file, opset, int8, int8_out, calib_data, calib_split, calib_n, eval_data, eval_split,
            eval_n, as_json):
    """Export a trained model to ONNX (dynamic batch; classes, preprocessing and temperature embedded)."""
    from ..inference.export import export_checkpoint
    from ..inference.predictor import OnnxPredictor
    from ..inference.preprocess import Preprocess
    from ..engine.checkpoint import read_json, resolve_checkpoint

    if calib_data and not int8:
        raise UserError("--calib-data is only used with --int8")
    checkpoint = resolve_checkpoint_arg(checkpoint)
    side = read_json(resolve_checkpoint(checkpoint)[1])
    classes = tuple(side["classes"])
    pre = Preprocess.from_sidecar(side["preprocess"], str(checkpoint))
    calib = None
    if int8 and calib_data:
        faces, _ = load_faces(calib_data, calib_split, classes, calib_n)
        calib = pre.batch(faces)
    rep: dict[str, Any] = export_checkpoint(checkpoint, onnx_file, int8=int8, int8_path=int8_out, calibration=calib,
                                            opset=opset)
    if eval_data:
        from ..evaluation.metrics import accuracy, balanced_accuracy

        faces, y = load_faces(eval_data, eval_split, classes, eval_n)
        x = pre.batch(faces)
        rep["eval"] = {"data": eval_data, "split": eval_split, "n": int(len(y))}
        paths = {"fp32": rep["onnx"]} | ({"int8": rep["int8"]["onnx"]} if int8 else {})
        for tag, p in paths.items():
            pred = np.concatenate([OnnxPredictor(p).predict_batch(x[i:i + 256]).labels for i in range(0, len(x), 256)])
            rep["eval"][tag] = {"accuracy": accuracy(y, pred), "balanced_accuracy": balanced_accuracy(y, pred, len(classes))}
        if int8:
            rep["eval"]["accuracy_change"] = rep["eval"]["int8"]["accuracy"] - rep["eval"]["fp32"]["accuracy"]
    human = [f"ONNX written to {rep['onnx']} ({rep['bytes'] / 1e6:.1f} MB, opset {opset}, dynamic batch)",
             f"fp32 parity vs PyTorch: max |dp| = {rep['parity_max_abs_prob_diff']:.2e} "
             f"({'ok' if rep['parity_ok'] else 'ABOVE'} tolerance {rep['parity_tolerance']:g})"]
    if int8:
        human.append(f"int8 ({rep['int8']['mode']}) written to {rep['int8']['onnx']} ({rep['int8']['bytes'] / 1e6:.1f} MB)")
    if eval_data:
        for tag in ("fp32", "int8"):
            if tag in rep["eval"]:
                e = rep["eval"][tag]
                human.append(f"{tag} on {eval_data} [{eval_split}] n={rep['eval']['n']}: accuracy {e['accuracy']:.4f}, "
                             f"balanced {e['balanced_accuracy']:.4f}")
    emit(rep, as_json, "\n".join(human))
    if not rep["parity_ok"]:
        raise UserError(f"exported model differs from PyTorch by {rep['parity_max_abs_prob_diff']:.2e} > "
                        f"{rep['parity_tolerance']:g}")
