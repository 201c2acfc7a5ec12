"""HTTP service (FastAPI): ``POST /predict`` (image upload -> JSON faces), ``GET /health``, ``GET /`` (upload page).

Uploads are checked before any model work: content type (an image type), size in bytes
(``max_bytes``; a larger ``Content-Length`` is refused before the body is read) and pixel count
(``max_pixels``, read from the image header before decoding). Every refusal is a 4xx JSON
``{"error": message}``. Images are decoded in memory; the only files ever written are the multipart
parser's spool files, in the system temp dir. ``fairexpr serve`` binds 127.0.0.1 by default.
"""

import socket
import threading
import time
from importlib import resources
from typing import Any

from ..data.base import DataError
from .images import decode_rgb
from .pipeline import FacePipeline
from .predictor import Predictor

ALLOWED_TYPES = frozenset({"image/jpeg", "image/png", "image/bmp", "image/x-ms-bmp", "image/webp", "image/gif",
                           "image/tiff"})
#: content types that say nothing about the bytes: the image type is then read from the file's signature
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/x-www-form-urlencoded"})
_SIGNATURES = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"BM", "image/bmp"),
               (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"), (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"))


def sniff_image_type(data: bytes) -> str | None:
    """The image type from the file signature (magic bytes), or ``None`` when it is not an image we read."""
    for sig, t in _SIGNATURES:
        if data.startswith(sig):
            return t
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


DEFAULT_MAX_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_PIXELS = 16_000_000


def create_app(predictor: Predictor, detector: Any = "haar", *, crops: bool = False, min_face: int = 24,
               margin: float = 0.1, threshold: float = 0.5, max_bytes: int = DEFAULT_MAX_BYTES,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
    """Build the FastAPI app around one predictor (+ detector)."""
    from fastapi import FastAPI, File, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse

    pipe = FacePipeline(predictor, detector, crops=crops, min_face=min_face, margin=margin, threshold=threshold)
    lock = threading.Lock()
    app = FastAPI(title="fairexpr", description="Facial expression recognition service", version="1")
    started = time.time()
    page = resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8")

    def err(status: int, msg: str) -> JSONResponse:
        return JSONResponse({"error": msg}, status_code=status)

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        if request.method == "POST":
            cl = request.headers.get("content-length")
            if cl is not None and cl.isdigit() and int(cl) > max_bytes + 64 * 1024:  # multipart overhead
                return err(413, f"upload of {int(cl)} bytes exceeds the limit of {max_bytes} bytes")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        missing = [".".join(str(p) for p in e.get("loc", [])) for e in exc.errors()]
        return err(422, f"expected a multipart form with an image in field 'file' (problem with: {', '.join(missing)})")

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "uptime_s": round(time.time() - started, 1), **predictor.describe(),
                "detector": None if crops else pipe.detector.name, "max_bytes": max_bytes, "max_pixels": max_pixels}

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.post("/predict")
    def predict(file: UploadFile = File(...)) -> Any:
        ctype = (file.content_type or "").split(";")[0].strip().lower()
        data = file.file.read(max_bytes + 1)
        if len(data) > max_bytes:
            return err(413, f"{file.filename!r} is larger than the limit of {max_bytes} bytes")
        if ctype in GENERIC_TYPES:  # `requests.post(url, files={"file": f})` sends octet-stream or nothing
            ctype = sniff_image_type(data) or ctype
        if ctype not in ALLOWED_TYPES:
            return err(415, f"unsupported content type {ctype or 'none'!r} for {file.filename!r}; expected one of "
                            f"{', '.join(sorted(ALLOWED_TYPES))} (or an upload of such an image as "
                            "application/octet-stream)")
        try:
            img = decode_rgb(data, name=file.filename or "upload", max_pixels=max_pixels)
        except DataError as e:
            return err(413 if "pixels" in str(e) or "too large" in str(e) else 400, str(e))
        t0 = time.perf_counter()
        with lock:
            recs = pipe.predict_image(img, file.filename or "upload")
        faces = [r.to_dict() for r in recs]
        for f in faces:
            f.pop("source", None), f.pop("frame", None), f.pop("time", None)
        return {"filename": file.filename, "width": int(img.shape[1]), "height": int(img.shape[0]),
                "classes": list(predictor.classes), "n_faces": sum(r.status == "ok" for r in recs),
                "faces": faces, "seconds": round(time.perf_counter() - t0, 4)}

    return app


def bind_socket(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0 = a free port chosen by the system; read it back with
    ``sock.getsockname()[1]``). Raises ``OSError`` (address in use, unknown host...)."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(app: Any, host: str = "127.0.0.1", port: int = 8000, sock: Any = None) -> None:  # pragma: no cover - blocking
    """Run ``app`` with uvicorn on ``sock`` (from :func:`bind_socket`) or on ``host:port``."""
    import uvicorn

    if sock is None:
        uvicorn.run(app, host=host, port=port, log_level="info")
    else:
        uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[sock])
