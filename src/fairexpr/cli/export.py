"""`fairexpr export`: checkpoint -> self-describing ONNX (dynamic batch), fp32 parity check, optional int8."""
from __future__ import annotations

from typing import Any

import click
import numpy as np

from .common import UserError, checkpoint_option, emit, json_option, resolve_checkpoint_arg
from .evaluate import exclusion_lines


def load_faces(spec: str, split: str | None, classes: tuple[str, ...], limit: int | None = None,
               seed: int = 0, progress: bool = False) -> tuple[list[np.ndarray], np.ndarray, dict[str, Any]]:
    """Face crops (RGB uint8) and labels re-indexed into ``classes`` from a dataset split, and the exclusions
    (``{"total", "by_reason"}``: the adapter's protocol exclusions, rows without a label, classes the model lacks;
    nothing is left out silently). ``limit`` draws a seeded random subset of what remains."""
    from collections import Counter

    from tqdm.auto import tqdm

    from ..data.base import DataError, FERDataset

    ds = FERDataset.from_spec(spec, split, mode="RGB")
    by_reason: dict[str, int] = dict(Counter(r for _, r in ds.skipped.items))
    idx = []
    for i, s in enumerate(ds.samples):
        if s.label < 0:
            by_reason["no label"] = by_reason.get("no label", 0) + 1
        elif ds.classes[s.label] not in classes:
            key = f"class {ds.classes[s.label]!r} is not one of the model's classes"
            by_reason[key] = by_reason.get(key, 0) + 1
        else:
            idx.append(i)
    if not idx:
        raise DataError(f"{spec} [{split}]: no labelled images in the model's classes {list(classes)}")
    if limit is not None and len(idx) > limit:
        idx = sorted(np.random.default_rng(seed).choice(idx, size=limit, replace=False).tolist())
    faces = []
    for i in tqdm(idx, desc=f"decoding {spec}" + (f" [{split}]" if split else ""), unit="img", disable=not progress,
                  leave=False, mininterval=1.0):
        faces.append(np.asarray(ds.load_image(i)))
    labels = np.array([classes.index(ds.classes[ds.samples[i].label]) for i in idx], np.int64)
    return faces, labels, {"total": int(sum(by_reason.values())), "by_reason": by_reason}


@click.command("export")
@checkpoint_option()
@click.option("--onnx", "onnx_file", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click.option("--opset", type=int, default=17, show_default=True)
@click.option("--int8", is_flag=True, help="Also write an int8-quantized copy (<stem>.int8.onnx).")
@click.option("--int8-out", type=click.Path(dir_okay=False), help="Path of the int8 copy.")
@click.option("--calib-data", help="FORMAT:PATH of faces for static int8 calibration (dynamic quantization without).")
@click.option("--calib-split", default=None, help="Split of --calib-data (e.g. train).")
@click.option("--calib-n", type=click.IntRange(min=1), default=256, show_default=True, help="Calibration faces (seeded subset).")
@click.option("--eval-data", help="FORMAT:PATH to measure the accuracy of fp32 vs int8 on (e.g. a test split).")
@click.option("--eval-split", default=None, help="Split of --eval-data.")
@click.option("--eval-n", type=click.IntRange(min=1), default=None, help="Evaluate on a seeded subset of this size.")
@click.option("--no-progress", is_flag=True, help="Hide the decoding progress bars of --calib-data / --eval-data.")
@json_option
def command(checkpoint, onnx_file, opset, int8, int8_out, calib_data, calib_split, calib_n, eval_data, eval_split,
            eval_n, no_progress, as_json):
    """Export a trained model to ONNX (dynamic batch; classes, preprocessing and temperature embedded)."""
    from ..inference.export import export_checkpoint
    from ..inference.predictor import OnnxPredictor
    from ..inference.preprocess import Preprocess
    from ..checkpoint import read_json, resolve_checkpoint

    if calib_data and not int8:
        raise UserError("--calib-data is only used with --int8")
    for flag, val, need in (("--calib-split", calib_split, calib_data), ("--eval-split", eval_split, eval_data),
                            ("--eval-n", eval_n, eval_data)):
        if val is not None and not need:
            raise UserError(f"{flag} is only used with --{flag.split('-')[2]}-data")
    progress = not (no_progress or as_json)
    checkpoint = resolve_checkpoint_arg(checkpoint)
    side = read_json(resolve_checkpoint(checkpoint)[1])
    classes = tuple(side["classes"])
    pre = Preprocess.from_sidecar(side["preprocess"], str(checkpoint))
    calib = None
    if int8 and calib_data:
        faces, _, calib_ex = load_faces(calib_data, calib_split, classes, calib_n, progress=progress)
        calib = pre.batch(faces)
    rep: dict[str, Any] = export_checkpoint(checkpoint, onnx_file, int8=int8, int8_path=int8_out, calibration=calib,
                                            opset=opset)
    if calib is not None:
        rep["int8"]["calibration"] = {"data": calib_data, "split": calib_split, "n": int(len(calib)),
                                      "exclusions": calib_ex}
    if eval_data:
        from ..evaluation.metrics import accuracy, balanced_accuracy

        faces, y, eval_ex = load_faces(eval_data, eval_split, classes, eval_n, progress=progress)
        x = pre.batch(faces)
        rep["eval"] = {"data": eval_data, "split": eval_split, "n": int(len(y)), "exclusions": eval_ex}
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
        human += exclusion_lines(rep["eval"]["exclusions"])
    emit(rep, as_json, "\n".join(human))
    if not rep["parity_ok"]:
        raise UserError(f"exported model differs from PyTorch by {rep['parity_max_abs_prob_diff']:.2e} > "
                        f"{rep['parity_tolerance']:g}")
