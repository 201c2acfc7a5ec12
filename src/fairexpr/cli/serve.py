"""`fairexpr serve`: the HTTP service (POST /predict, GET /health, GET / upload page); localhost by default."""
from __future__ import annotations

import json
import sys

import click

from .common import UserError, checkpoint_option, resolve_checkpoint_arg, tta_option


@click.command("serve")
@checkpoint_option()
@click.option("--onnx", "onnx_file", type=click.Path(exists=True, dir_okay=False), help="Exported .onnx (no torch).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (localhost by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port (0 = any free port; the one chosen is printed).")
@click.option("--crops", is_flag=True, help="Uploads are face crops (no detection).")
@click.option("--detector", type=click.Choice(["auto", "dlib", "haar", "yunet"]), default="auto", show_default=True,
              help="Face detector: auto = dlib (HOG + landmarks, eye alignment) when fairexpr[faces] is installed, "
                   "else OpenCV's Haar cascade.")
@click.option("--yunet-model", type=click.Path(dir_okay=False), help="Local YuNet ONNX file (for --detector yunet).")
@click.option("--min-face", type=click.IntRange(min=1), default=24, show_default=True)
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="reliable = confidence >= threshold.")
@click.option("--max-bytes", type=click.IntRange(min=1), default=8 * 1024 * 1024, show_default=True, help="Largest upload accepted.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=16_000_000, show_default=True, help="Largest image (width x height).")
@tta_option
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON line on stdout once the port is bound (url, port, model, detector, options), "
                   "for scripts that start the service.")
def command(checkpoint, onnx_file, host, port, crops, detector, yunet_model, min_face, threshold, max_bytes, max_pixels, tta,
            as_json):
    """Serve a model over HTTP with an upload page at /."""
    from ..inference.detect import create_detector
    from ..inference.predictor import load_predictor
    from ..inference.service import bind_socket, create_app, serve

    if checkpoint is not None and onnx_file is not None:
        raise UserError("give --checkpoint or --onnx, not both (neither = the shipped default model)")
    if onnx_file is None:
        checkpoint = resolve_checkpoint_arg(checkpoint)
    pred = load_predictor(checkpoint=checkpoint, onnx=onnx_file, tta=tta)
    det = None if crops else (create_detector("yunet", model=yunet_model) if detector == "yunet" else create_detector(detector))
    app = create_app(pred, det, crops=crops, min_face=min_face, threshold=threshold, max_bytes=max_bytes,
                     max_pixels=max_pixels)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: binding {host} exposes the service beyond this machine", err=True)
    try:
        sock = bind_socket(host, port)
    except OSError as e:
        raise UserError(f"--host/--port: cannot listen on {host}:{port}: {e.strerror or e}") from None
    port = sock.getsockname()[1]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    det_name = "none, crops" if det is None else det.name
    tta_note = "" if pred.tta == "none" else f", {pred.tta} TTA"
    click.echo(f"fairexpr serving {pred.backend} model {pred.source} (detector: {det_name}{tta_note}) on {url}", err=True)
    if as_json:
        click.echo(json.dumps({"url": url, "host": host, "port": port, "backend": pred.backend, "model": str(pred.source),
                               "classes": list(pred.classes), "detector": None if det is None else det.name,
                               "crops": crops, "min_face": min_face, "threshold": threshold, "tta": pred.tta,
                               "max_bytes": max_bytes, "max_pixels": max_pixels}), nl=True)
        sys.stdout.flush()
    serve(app, host, port, sock=sock)
