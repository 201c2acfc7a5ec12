"""`fairexpr predict`: expressions of the faces in photos, folders, face crops and videos -> CSV/JSON.

With ``--onnx`` it runs on onnxruntime alone (torch is never imported on that path).
"""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Iterator

import click

from .._io import atomic_write_bytes, atomic_write_text
from .common import UserError, checkpoint_option, emit, json_option, resolve_checkpoint_arg, tta_option


def expand_inputs(inputs: tuple[str, ...]) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """Files and folders (recursive) -> ``[(path, "image"|"video")]`` sorted per folder, plus missing inputs."""
    from ..inference.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES

    out: list[tuple[Path, str]] = []
    bad: list[tuple[str, str]] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            found = [f for f in sorted(p.rglob("*")) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
            if not found:
                bad.append((s, "folder contains no image or video files"))
            out += [(f, "video" if f.suffix.lower() in VIDEO_SUFFIXES else "image") for f in found]
        elif p.is_file():
            out.append((p, "video" if p.suffix.lower() in VIDEO_SUFFIXES else "image"))
        else:
            bad.append((s, "no such file or folder"))
    return out, bad


@click.command("predict")
@click.argument("inputs", nargs=-1, required=True)
@checkpoint_option()
@click.option("--onnx", "onnx_file", type=click.Path(exists=True, dir_okay=False), help="Exported .onnx (onnxruntime, no torch).")
@click.option("--crops", is_flag=True, help="Inputs are face crops: the whole image is the face (no detection).")
@click.option("--out-csv", type=click.Path(dir_okay=False), help="Write one row per face/status to this CSV.")
@click.option("--out-json", type=click.Path(dir_okay=False), help="Write all results (faces, bad files, video summaries) as JSON.")
@click.option("--annotate", "annotate_dir", type=click.Path(file_okay=False),
              help="Write annotated images/frames, and video timelines + summaries, to this folder.")
@click.option("--every-n", type=click.IntRange(min=1), help="Videos: use every n-th frame.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), help="Videos: sample about this many frames per second.")
@click.option("--min-face", type=click.IntRange(min=1), default=24, show_default=True, help="Faces smaller than this (px) are reported, not classified.")
@click.option("--margin", type=click.FloatRange(min=0), default=0.1, show_default=True, help="Crop margin around a face box (fraction per side).")
@click.option("--detector", type=click.Choice(["auto", "dlib", "haar", "yunet"]), default="auto", show_default=True,
              help="Face detector: auto = dlib (HOG + landmarks, eye alignment) when fairexpr[faces] is installed, "
                   "else OpenCV's Haar cascade.")
@click.option("--yunet-model", type=click.Path(dir_okay=False), help="Local YuNet ONNX file (for --detector yunet).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="reliable = confidence >= threshold.")
@click.option("--strict", is_flag=True, help="Exit non-zero (1) when any input could not be read (with none readable, "
                                             "predict always exits 1).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Faces per forward pass (across images).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="onnxruntime/torch CPU threads.")
@tta_option
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@json_option
def command(inputs, checkpoint, onnx_file, crops, out_csv, out_json, annotate_dir, every_n, fps, min_face, margin,
            detector, yunet_model, threshold, strict, batch_size, threads, tta, no_progress, as_json):
    """Predict expressions (label, probabilities, normalized-entropy confidence) for INPUTS: images,
    folders (recursive) and videos. Faces too small and images without faces are reported with a status."""
    from ..inference.detect import create_detector
    from ..inference.pipeline import FacePipeline

    if checkpoint is not None and onnx_file is not None:
        raise UserError("give --checkpoint or --onnx, not both (neither = the shipped default model)")
    if every_n is not None and fps is not None:
        raise UserError("give either --every-n or --fps, not both")
    if onnx_file:
        from ..inference.predictor import OnnxPredictor

        predictor = OnnxPredictor(onnx_file, threads=threads, tta=tta)
    else:
        if threads:
            import torch

            torch.set_num_threads(threads)
        from ..inference.predictor import TorchPredictor

        predictor = TorchPredictor(resolve_checkpoint_arg(checkpoint), tta=tta)
    det = None
    if not crops:
        det = create_detector("yunet", model=yunet_model) if detector == "yunet" else create_detector(detector)
    pipe = FacePipeline(predictor, det, crops=crops, min_face=min_face, margin=margin, threshold=threshold,
                        batch_size=batch_size)
    sources, bad = expand_inputs(inputs)
    result = run_predict(pipe, sources, bad, every_n=every_n, fps=fps, annotate_dir=annotate_dir,
                         progress=not no_progress and not as_json, report_dir=_report_dir(annotate_dir, out_csv, out_json))
    classes = list(predictor.classes)
    if out_csv:
        write_csv(out_csv, [r.to_row(classes) for r in result["records"]], classes)
    payload = {"model": predictor.describe(), "detector": None if det is None else det.name, "faces": [r.to_dict() for r in result["records"]],
               "bad_files": [{"path": p, "error": e} for p, e in result["bad"]], "videos": result["videos"],
               "counts": result["counts"]}
    if out_json:
        atomic_write_text(out_json, json.dumps(payload, indent=2))
    human = _human(result, classes, out_csv, out_json, annotate_dir, tta=predictor.tta)
    emit(payload, as_json, human)
    if result["bad"] and (strict or not result["records"]):
        if not result["records"] and not strict:
            click.echo(f"error: none of the {len(result['bad'])} input(s) could be read", err=True)
        raise SystemExit(1)


def _report_dir(annotate_dir: str | None, out_csv: str | None, out_json: str | None) -> Path | None:
    if annotate_dir:
        return Path(annotate_dir)
    for f in (out_csv, out_json):
        if f:
            return Path(f).parent
    return None


def run_predict(pipe: Any, sources: list[tuple[Path, str]], bad: list[tuple[str, str]] | None = None, *,
                every_n: int | None = None, fps: float | None = None, annotate_dir: str | Path | None = None,
                progress: bool = True, report_dir: Path | None = None) -> dict[str, Any]:
    """Run the pipeline over expanded sources; returns records, bad files, video summaries and counts."""
    from tqdm import tqdm

    from ..data.base import DataError
    from ..inference.images import decode_rgb
    from ..inference.pipeline import annotate
    from ..inference.video import iter_frames, plot_timeline, summarize, video_info

    bad = list(bad or [])
    ann = Path(annotate_dir) if annotate_dir else None
    if ann:
        ann.mkdir(parents=True, exist_ok=True)
    n_images = sum(k == "image" for _, k in sources)
    total = n_images
    for p, k in sources:
        if k == "video":
            try:
                info = video_info(p)
                from ..inference.video import sample_step

                total += -(-max(info["frames"], 0) // sample_step(info["fps"], every_n, fps))
            except DataError:
                pass
    bar = tqdm(total=total or None, unit="img", desc="predict", disable=not progress, file=sys.stderr, leave=False)
    used_names: dict[str, str] = {}

    def items() -> Iterator[tuple[Any, str, int | None, float | None]]:
        for p, kind in sources:
            if kind == "video":
                try:
                    for fi, t, rgb in iter_frames(p, every_n, fps):
                        yield rgb, str(p), fi, t
                except DataError as e:
                    bad.append((str(p), str(e)))
            else:
                try:
                    img = decode_rgb(p)
                except DataError as e:
                    bad.append((str(p), str(e)))
                    bar.update(1)
                    continue
                yield img, str(p), None, None

    records = []
    per_video: dict[str, list] = {}
    for image, recs in pipe.run(items()):
        bar.update(1)
        records.extend(recs)
        if recs[0].frame is not None:
            per_video.setdefault(recs[0].source, []).extend(recs)
        if ann:
            name = _ann_name(Path(recs[0].source), recs[0].frame, used_names)
            path = ann / name
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_rgb(path, annotate(image, recs))
    bar.close()
    classes = list(pipe.classes)
    videos = {}
    for src, recs in per_video.items():
        summ = summarize(recs, classes)
        if report_dir:
            stem = Path(src).stem
            report_dir.mkdir(parents=True, exist_ok=True)
            summ["timeline_png"] = str(plot_timeline(recs, classes, report_dir / f"{stem}_timeline.png", title=Path(src).name))
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["expression", "share_of_time"])
            for c in classes:
                w.writerow([c, f"{summ['share'][c]:.4f}"])
            w.writerow(["no_face", f"{summ['no_face']:.4f}"])
            atomic_write_text(report_dir / f"{stem}_summary.csv", buf.getvalue())
            summ["summary_csv"] = str(report_dir / f"{stem}_summary.csv")
        videos[src] = summ
    counts = {s: sum(r.status == s for r in records) for s in ("ok", "too_small", "no_face")}
    counts["bad_files"] = len(bad)
    return {"records": records, "bad": bad, "videos": videos, "counts": counts}


def _ann_name(src: Path, frame: int | None, stems: dict[str, str]) -> str:
    """Unique output name per source (two inputs with the same file name get ``_1``, ``_2``...)."""
    key = str(src)
    if key not in stems:
        taken, stem, i = set(stems.values()), src.stem, 1
        while stem in taken:
            stem, i = f"{src.stem}_{i}", i + 1
        stems[key] = stem
    stem = stems[key]
    return f"{stem}_frames/f{frame:06d}.jpg" if frame is not None else f"{stem}.jpg"


def _write_rgb(path: Path, rgb: Any) -> None:
    """An annotated frame as JPEG (every name ``_ann_name`` gives ends in .jpg), written atomically."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    atomic_write_bytes(path, buf.getvalue())


def write_csv(path: str | Path, rows: list[dict[str, Any]], classes: list[str]) -> None:
    cols = ["source", "frame", "time", "face", "status", "x", "y", "w", "h", "label"] + [f"p_{c}" for c in classes] + \
        ["confidence", "reliable"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def _human(result: dict[str, Any], classes: list[str], out_csv: str | None, out_json: str | None,
           annotate_dir: str | None, tta: str = "none") -> str:
    from ..evaluation.tta import tta_label

    lines = []
    for r in result["records"]:
        where = r.source + (f" @{r.time:.2f}s" if r.time is not None else "")
        if r.status == "ok":
            lines.append(f"{where}  face {r.face} {tuple(r.box)}: {r.label} (confidence {r.confidence:.3f}"
                         f"{'' if r.reliable else ', unreliable'})")
        elif r.status == "too_small":
            lines.append(f"{where}  face {r.face} {tuple(r.box)}: too small")
        else:
            lines.append(f"{where}  no face found")
    if len(lines) > 200:
        lines = lines[:200] + [f"... {len(result['records']) - 200} more (see --out-csv/--out-json)"]
    for src, s in result["videos"].items():
        share = ", ".join(f"{c} {100 * v:.1f}%" for c, v in s["share"].items() if v > 0)
        lines.append(f"video {src}: {s['frames']} frames; {share or 'no faces'}; no face {100 * s['no_face']:.1f}%")
    c = result["counts"]
    lines.append(f"{c['ok']} face(s) classified, {c['too_small']} too small, {c['no_face']} image(s)/frame(s) "
                 f"without a face, {c['bad_files']} unreadable input(s)"
                 + ("" if tta == "none" else f"; {tta_label(tta)} (--tta none is faster)"))
    for p, e in result["bad"]:
        # reader errors already start with the file name: print it once
        e = e[len(p):].lstrip(": ") if e.startswith(str(p)) else e
        lines.append(f"  unreadable: {p}: {e}")
    for what, f in (("CSV", out_csv), ("JSON", out_json), ("annotated images", annotate_dir)):
        if f:
            lines.append(f"{what} written to {f}")
    return "\n".join(lines)
