"""`fairexpr demo`: the main job on built-in data and the shipped model, no dataset needed.

Generates procedural expressive faces with FER2013's class imbalance (disgust ~16x rarer than
happiness), evaluates the shipped default model on them as it is (a new domain), then fine-tunes it twice
with the same budget — a cross-entropy baseline and LDAM-DRW, both from the shipped model's backbone with a
fresh classifier head — evaluates all three on a class-balanced test set and writes the comparison report
(per-class accuracy bars side by side, confusion matrices, calibration). Sized to finish in a few minutes on
2 CPU cores.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from .cli.common import emit, json_option

DEMO_BASE: dict[str, Any] = {
    "seed": 0,
    "data": {"train": "synthetic:fer2013", "train_split": "train", "train_options": {"total": 6000, "seed": 0},
             "val": "synthetic:fer2013", "val_split": "val", "val_options": {"total": 6000, "seed": 0},
             "test": "synthetic:fer2013", "test_split": "test", "test_options": {"total": 6000, "seed": 0},
             "image_size": 64, "channels": 1},
    # the packaged MobileNetV2 model's backbone (fairexpr.zoo; the default model is an ensemble of it and a dlib
    # network, and a training run starts from one network); each run gets a freshly initialised head
    "model": {"name": "mobilenet_v2", "pretrained": "fer2013-mobilenetv2-ldam", "kwargs": {"small_input": False, "drop_rate": 0.2}},
    "augment": {"hflip": True, "crop_scale": [0.85, 1.0], "rotation": 8, "color_jitter": 0.2},
    "optim": {"name": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": 4e-5},
    "schedule": {"name": "cosine"},
    "train": {"epochs": 5, "batch_size": 64, "max_minutes": 1.6},
}

RUNS: dict[str, dict[str, Any]] = {
    "ce": {"loss": {"name": "ce", "kwargs": {}}},
    "ldam_drw": {"model": {"kwargs": {"head": "normed"}},
                 "loss": {"name": "ldam", "kwargs": {"max_m": 0.5, "s": 30.0, "drw_epoch": 3}}},
}


SHIPPED = "shipped_model"  # the default model evaluated as it is, before any fine-tuning


def group_photo(img: "Any") -> "Any":
    """A group photo made of one public-domain portrait (scikit-image's NASA photo of astronaut Eileen Collins):
    four copies of the head on a light canvas, at three sizes, one turned by 20 degrees and one small."""
    import cv2
    import numpy as np

    face = img[20:300, 110:360]  # head and shoulders, RGB
    canvas = np.full((520, 1280, 3), 236, np.uint8)

    def paste(patch: "Any", x: int, y: int) -> None:
        h, w = patch.shape[:2]
        canvas[y:y + h, x:x + w] = patch

    paste(cv2.resize(face, (330, 370), interpolation=cv2.INTER_AREA), 30, 75)
    small = cv2.resize(face, (280, 314), interpolation=cv2.INTER_AREA)
    m = cv2.getRotationMatrix2D((140, 157), 20, 1.0)
    paste(cv2.warpAffine(small, m, (280, 314), borderValue=(236, 236, 236)), 410, 100)
    paste(cv2.resize(face, (240, 269), interpolation=cv2.INTER_AREA), 740, 125)
    paste(cv2.resize(face, (130, 146), interpolation=cv2.INTER_AREA), 1060, 190)
    return canvas


def demo_photo(out: Path, progress: bool = True) -> dict[str, Any]:
    """The shipped model on a real photo: ``out/photo/group_photo.jpg`` (built from scikit-image's public-domain
    portrait), its annotated copy and one JSON row per face in ``out/photo/faces.json``. Needs scikit-image
    (``make demo`` installs it); without it the step is skipped with the reason in the result."""
    import json

    import cv2

    try:
        from skimage import data
    except ImportError:
        return {"skipped": "scikit-image is not installed (pip install scikit-image; `make demo` installs it): its "
                           "public-domain portrait is the demo's photo"}
    from ._io import atomic_write_bytes
    from .cli.predict import run_predict
    from .inference.detect import create_detector
    from .inference.pipeline import FacePipeline
    from .inference.predictor import TorchPredictor
    from .zoo import pretrained_path

    d = out / "photo"
    d.mkdir(parents=True, exist_ok=True)
    photo = d / "group_photo.jpg"
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(group_photo(data.astronaut()), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 92])
    atomic_write_bytes(photo, buf.tobytes())
    pred = TorchPredictor(pretrained_path("default"), tta="auto")  # as `fairexpr predict photo.jpg` runs it
    det = create_detector("auto")
    res = run_predict(FacePipeline(pred, det), [(photo, "image")], [], annotate_dir=d / "annotated", progress=False,
                      report_dir=d)
    rows = [r.to_dict() for r in res["records"]]
    atomic_write_bytes(d / "faces.json", json.dumps({"model": pred.describe(), "detector": det.name, "faces": rows},
                                                    indent=2).encode())
    annotated = sorted((d / "annotated").glob("*.jpg"))
    return {"photo": str(photo), "annotated": str(annotated[0]) if annotated else None, "faces_json": str(d / "faces.json"),
            "detector": det.name, "faces": [{k: r[k] for k in ("face", "status", "label", "confidence", "box")} for r in rows]}


def evaluate_shipped(out: Path, test_spec: str, options: dict[str, Any], progress: bool) -> dict[str, Any]:
    """The shipped default model on the demo's test faces, unchanged: ``out/shipped_model/eval/test``, shaped
    like a run directory so the report shows it next to the fine-tuned runs."""
    import json

    from . import checkpoint as ck
    from .engine.evaluate import evaluate_checkpoint
    from .zoo import pretrained_path

    run = out / SHIPPED
    if (run / "eval" / "test" / "metrics.json").is_file():
        return json.loads((run / "eval" / "test" / "metrics.json").read_text())
    src = pretrained_path("default")
    side = ck.read_json(src / "model.json")
    side.pop("config", None)  # the run's own training config would be mistaken for this folder's
    side["copied_from"] = str(src)
    ck.atomic_write_json(run / "model.json", side)
    return evaluate_checkpoint(src, test_spec, "test", options=options, out_dir=run / "eval" / "test", progress=progress)


def run_demo(out: Path, minutes: float | None = None, progress: bool = True, total: int | None = None,
             epochs: int | None = None) -> dict[str, Any]:
    """Evaluate the shipped model, fine-tune both demo models into ``out/<run>`` and build ``out/report``.
    ``total``/``epochs`` shrink the demo (tests); finished runs are reused, interrupted ones resumed."""
    from .config import _merge_free, load_config
    from .engine import fit
    from .evaluation.report import build_report

    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    test_opts = dict(DEMO_BASE["data"]["test_options"], **({"total": total} if total else {}))
    click.echo("[demo] the shipped default model on a real photo (scikit-image's public-domain portrait) ...")
    photo = demo_photo(out, progress)
    if "skipped" in photo:
        click.echo(f"[demo] photo step skipped: {photo['skipped']}")
    click.echo("[demo] the shipped default model (fairexpr zoo) on the synthetic test faces, as it is ...")
    shipped = evaluate_shipped(out, DEMO_BASE["data"]["test"], test_opts, progress)
    for name, over in RUNS.items():
        extra = _merge_free(DEMO_BASE, over)
        if minutes:
            extra["train"]["max_minutes"] = minutes
        if epochs:
            extra["train"]["epochs"] = epochs
            if "drw_epoch" in extra["loss"].get("kwargs", {}):
                extra["loss"]["kwargs"]["drw_epoch"] = max(0, epochs - 1)
        if total:
            for role in ("train", "val", "test"):
                extra["data"][f"{role}_options"]["total"] = total
        extra["train"]["progress"] = progress
        cfg = load_config(None, extra=extra)
        run_dir = out / name
        if (run_dir / "result.json").exists():
            import json

            results[name] = json.loads((run_dir / "result.json").read_text())
            continue
        click.echo(f"[demo] fine-tuning the shipped model with {name} on synthetic FER2013-imbalanced faces ...")
        results[name] = fit(cfg, run_dir, resume=(run_dir / "last.json").exists())
    report = build_report([out / SHIPPED, *(out / n for n in RUNS)], out / "report",
                          title="fairexpr demo: the shipped model, then CE vs LDAM-DRW fine-tuning on imbalanced synthetic faces")
    keys = ("accuracy", "balanced_accuracy", "per_class_accuracy_min")
    runs = {SHIPPED: {k: shipped[k] for k in keys}}
    runs.update({n: {k: r["eval"]["test"][k] for k in keys} for n, r in results.items()})
    return {"report": str(report), "seconds": time.perf_counter() - t0, "photo": photo, "runs": runs}


@click.command("demo")
@click.option("--out", default="demo_out", show_default=True, type=click.Path(file_okay=False))
@click.option("--minutes", type=float, help="Training budget per model (default 1.6).")
@json_option
def command(out, minutes, as_json):
    """The shipped model on built-in imbalanced synthetic faces, then CE vs LDAM-DRW fine-tuning of it; writes the
    comparison report."""
    res = run_demo(Path(out), minutes)
    lines = [f"demo finished in {res['seconds'] / 60:.1f} min"]
    ph = res["photo"]
    if "skipped" in ph:
        lines.append(f"  photo: skipped ({ph['skipped']})")
    else:
        found = [f for f in ph["faces"] if f["status"] == "ok"]
        lines.append(f"  photo {ph['photo']}: {len(found)} face(s) ({ph['detector']} detector): "
                     + ", ".join(f"{f['label']} {f['confidence']:.2f}" for f in found))
        lines.append(f"    annotated: {ph['annotated']}; rows: {ph['faces_json']}")
    for n, m in res["runs"].items():
        lines.append(f"  {n:<13} test accuracy {m['accuracy']:.3f}  balanced {m['balanced_accuracy']:.3f}  "
                     f"worst class {m['per_class_accuracy_min']:.3f}")
    lines.append(f"report: {res['report']}")
    emit(res, as_json, "\n".join(lines))
