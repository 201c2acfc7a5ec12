"""Pictures for the README's inference section (issue 8): a predicted, annotated photo and the web service in use.

The photo is built from a public-domain picture that ships with scikit-image (NASA portrait of astronaut
Eileen Collins, ``skimage/data/astronaut.png``), never from the research-only datasets under
``../shared/data`` (those must not be redistributed). It is a group composite: the portrait at three
scales, one copy rotated by 20 degrees (alignment) and one too small to classify (reported, not dropped).

    .venv/bin/pip install scikit-image            # only for the picture; not a fairexpr dependency
    python benchmarks/readme_figures.py --checkpoint benchmarks/runs/ferplus_ce_s0 --out docs/img

Writes ``<out>/predict_photo.jpg`` (``fairexpr predict --annotate`` output) and ``<out>/service.png``
(headless-Chromium screenshot of ``fairexpr serve``'s page after uploading the photo). Needs Debian's ``chromium`` (``make browser``).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def astronaut() -> np.ndarray:
    try:
        from skimage import data
    except ImportError as e:  # pragma: no cover - user setup
        raise SystemExit("this script needs scikit-image for its public-domain sample photo: pip install scikit-image") from e
    return data.astronaut()  # RGB uint8, 512x512


def group_photo(img: np.ndarray) -> np.ndarray:
    """The demo's group photo (``fairexpr.demo.group_photo``): 3 sizes, one rotated, one small."""
    from fairexpr.demo import group_photo as build

    return build(img)


def screenshot_service(checkpoint: Path, photo: Path, out_png: Path, min_face: int) -> None:
    import base64

    import uvicorn

    from fairexpr.inference import TorchPredictor
    from fairexpr.inference.devtools import free_port, headless_chromium, upload_on_service_page, wait_until
    from fairexpr.inference.service import create_app

    app = create_app(TorchPredictor(checkpoint), "haar", min_face=min_face)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    wait_until(lambda: server.started, "the service to start")
    try:
        with headless_chromium(window=(1280, 600)) as cdp:
            cdp("Emulation.setDeviceMetricsOverride", width=1280, height=600, deviceScaleFactor=1, mobile=False)
            state = upload_on_service_page(cdp, f"http://127.0.0.1:{port}/", str(photo))
            if state != "done":
                status = cdp.eval("document.getElementById('status').textContent")
                raise SystemExit(f"the page reported: {status}")
            time.sleep(0.3)
            h = int(cdp.eval("Math.ceil(document.body.getBoundingClientRect().bottom) + 24"))
            cdp("Emulation.setDeviceMetricsOverride", width=1280, height=min(h, 2400), deviceScaleFactor=1, mobile=False)
            time.sleep(0.3)
            png = base64.b64decode(cdp("Page.captureScreenshot", format="png")["data"])
    finally:
        server.should_exit = True
    from fairexpr._io import atomic_write_bytes

    atomic_write_bytes(out_png, png)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, type=Path, help="a fairexpr run directory")
    ap.add_argument("--out", default=ROOT / "docs" / "img", type=Path)
    ap.add_argument("--min-face", type=int, default=80)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as td:
        src = Path(td) / "group_photo.jpg"
        cv2.imwrite(str(src), cv2.cvtColor(group_photo(astronaut()), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        ann = Path(td) / "annotated"
        rc = subprocess.run([sys.executable, "-m", "fairexpr.cli", "predict", "--checkpoint", str(a.checkpoint), str(src),
                             "--annotate", str(ann), "--min-face", str(a.min_face), "--no-progress"], cwd=ROOT).returncode
        if rc:
            raise SystemExit(f"fairexpr predict failed (exit {rc}) on {a.checkpoint}; see its message above")
        annotated = sorted(ann.rglob("*.jpg")) + sorted(ann.rglob("*.png"))
        if not annotated:
            raise SystemExit(f"fairexpr predict wrote no annotated image under {ann}")
        shutil.copyfile(annotated[0], a.out / "predict_photo.jpg")
        screenshot_service(a.checkpoint, src, a.out / "service.png", a.min_face)
    print(f"wrote {a.out / 'predict_photo.jpg'} and {a.out / 'service.png'}")


if __name__ == "__main__":
    main()
