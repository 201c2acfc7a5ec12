"""Web service: FastAPI TestClient on real composite photos and bad uploads; one headless-Chromium run."""
from __future__ import annotations

import io
import os
import threading

import numpy as np
import pytest
from PIL import Image

from fairexpr.inference import TorchPredictor
from fairexpr.inference.service import create_app


@pytest.fixture(scope="module")
def app(ckpt):
    return create_app(TorchPredictor(ckpt), "haar", min_face=100, max_bytes=2_000_000, max_pixels=1_500_000)


@pytest.fixture(scope="module")
def client(app):
    from fastapi.testclient import TestClient

    return TestClient(app)


def _jpeg(img: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(img).save(b, format="JPEG", quality=92)
    return b.getvalue()


def test_health_and_page(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["backend"] == "torch" and len(h["classes"]) == 7 and h["detector"] == "haar"
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text and "fetch('predict'" in page.text


def test_predict_composite_photo(client, group_photo):
    r = client.post("/predict", files={"file": ("group.jpg", _jpeg(group_photo[0]), "image/jpeg")})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["n_faces"] == 3 and [f["status"] for f in d["faces"]] == ["ok"] * 3 + ["too_small"]
    assert d["width"] == group_photo[0].shape[1] and set(d["faces"][0]["probabilities"]) == set(d["classes"])


def test_predict_no_face(client):
    r = client.post("/predict", files={"file": ("blank.png", _jpeg(np.full((100, 100, 3), 128, np.uint8)), "image/png")})
    assert r.status_code == 200 and r.json()["faces"] == [{"face": None, "status": "no_face", "box": None, "label": None,
                                                            "probabilities": None, "confidence": None,
                                                            "reliable": None, "detector_score": None}]


@pytest.mark.parametrize("name,data,ctype,status,msg", [
    ("notes.txt", b"hello", "text/plain", 415, "unsupported content type"),
    ("fake.jpg", b"definitely not a jpeg", "image/jpeg", 400, "not a readable image"),
    ("empty.png", b"", "image/png", 400, "empty"),
])
def test_bad_uploads(client, name, data, ctype, status, msg):
    r = client.post("/predict", files={"file": (name, data, ctype)})
    assert r.status_code == status and msg in r.json()["error"]


def test_uploads_without_an_image_content_type_are_sniffed(client, group_photo):
    """The ordinary `requests.post(url, files={"file": f})` sends application/octet-stream (or no type): the bytes
    decide; a non-image sent that way is still refused."""
    jpg = _jpeg(group_photo[0])
    for ctype in ("application/octet-stream", ""):
        r = client.post("/predict", files={"file": ("group.jpg", jpg, ctype)} if ctype else {"file": ("group.jpg", jpg)})
        assert r.status_code == 200 and r.json()["n_faces"] == 3, (ctype, r.text)
    r = client.post("/predict", files={"file": ("notes.bin", b"hello there", "application/octet-stream")})
    assert r.status_code == 415 and "application/octet-stream" in r.json()["error"]


def test_sniff_image_type():
    from fairexpr.inference.service import sniff_image_type

    assert sniff_image_type(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert sniff_image_type(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert sniff_image_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_image_type(b"hello") is None


def test_too_many_pixels_and_too_many_bytes(client):
    big = io.BytesIO()
    Image.new("L", (1500, 1100)).save(big, format="PNG")  # 1.65 MP > 1.5 MP limit, tiny file
    r = client.post("/predict", files={"file": ("big.png", big.getvalue(), "image/png")})
    assert r.status_code == 413 and "pixels" in r.json()["error"]
    r = client.post("/predict", files={"file": ("huge.png", b"\x00" * 3_000_000, "image/png")})
    assert r.status_code == 413 and "limit" in r.json()["error"]
    r = client.post("/predict", data={"x": "1"})
    assert r.status_code == 422 and "'file'" in r.json()["error"]


# ---------------------------------------------------------------- end to end in headless Chromium

@pytest.mark.skipif(os.environ.get("FAIREXPR_SKIP_BROWSER") == "1", reason="FAIREXPR_SKIP_BROWSER=1")
def test_upload_page_in_headless_chromium(app, group_photo_file):
    import uvicorn

    from fairexpr.inference.devtools import find_chromium, free_port, headless_chromium, upload_on_service_page, wait_until

    assert find_chromium(), "Debian's chromium must be installed for this test (apt-get install -y chromium)"
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        wait_until(lambda: server.started, "the service to start", timeout=30)
        with headless_chromium() as cdp:
            state = upload_on_service_page(cdp, f"http://127.0.0.1:{port}/", str(group_photo_file), timeout=60)
            assert state == "done", cdp.eval("document.getElementById('status').textContent")
            labels = cdp.eval("[...document.querySelectorAll('#probs tr.face td.label')].map(e => e.textContent)")
            summary = cdp.eval("document.getElementById('summary').textContent")
            canvas = cdp.eval("[document.getElementById('canvas').width, document.getElementById('canvas').height]")
            from fastapi.testclient import TestClient

            expected = TestClient(app).post("/predict", files={"file": ("g.jpg", group_photo_file.read_bytes(), "image/jpeg")}).json()
            assert labels == [f["label"] for f in expected["faces"] if f["status"] == "ok"]
            assert summary.startswith("3 face(s) classified, 1 too small")
            assert canvas == [expected["width"], expected["height"]]
    finally:
        server.should_exit = True
        th.join(timeout=5)


def test_serve_cli_builds_the_app_with_its_options(ckpt, group_photo_file, monkeypatch):
    """`fairexpr serve` end to end up to the socket: the app it would serve answers /health and /predict with the
    options given on the command line (--tta hflip, --min-face); binding is replaced by a capture."""
    from click.testing import CliRunner
    from fastapi.testclient import TestClient

    import fairexpr.inference.service as service
    from fairexpr.cli import cli

    served = {}
    monkeypatch.setattr(service, "serve", lambda app, host, port, sock=None: served.update(app=app, host=host, port=port,
                                                                                             sock=sock))
    r = CliRunner().invoke(cli, ["serve", "--checkpoint", str(ckpt), "--port", "0", "--min-face", "100", "--tta", "hflip"])
    assert r.exit_code == 0, r.output
    bound = served["sock"].getsockname()[1]
    served["sock"].close()
    assert served["host"] == "127.0.0.1" and served["port"] == bound > 0
    assert f"serving torch model {ckpt} (detector: " in r.output and f"http://127.0.0.1:{bound}/" in r.output
    c = TestClient(served["app"])
    h = c.get("/health").json()
    assert h["status"] == "ok" and h["tta"] == "hflip"
    d = c.post("/predict", files={"file": ("g.jpg", group_photo_file.read_bytes(), "image/jpeg")}).json()
    assert [f["status"] for f in d["faces"]] == ["ok"] * 3 + ["too_small"]
    bad = CliRunner().invoke(cli, ["serve", "--checkpoint", str(ckpt), "--tta", "vflip"])
    assert bad.exit_code != 0 and "vflip" in bad.output


def test_serve_json_reports_the_bound_port_and_a_busy_port_is_one_line(ckpt, tmp_path):
    """`fairexpr serve --json --port 0` in its own process: the JSON line on stdout names the free port it bound,
    the model and detector, and the service answers there; a port already taken is one clear error, exit 2."""
    import json
    import subprocess
    import sys
    import urllib.request

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "fairexpr.cli", "serve", "--checkpoint", str(ckpt), "--port", "0", "--crops",
                          "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = p.stdout.readline()
        assert line, p.stderr.read()
        info = json.loads(line)
        assert info["port"] > 0 and info["url"] == f"http://127.0.0.1:{info['port']}/"
        assert info["backend"] == "torch" and info["model"] == str(ckpt) and info["crops"] and info["detector"] is None
        from fairexpr.inference.devtools import wait_until

        def health():
            try:
                return json.loads(urllib.request.urlopen(info["url"] + "health", timeout=2).read())
            except OSError:
                return None

        h = wait_until(health, "the service to answer /health", timeout=30)
        assert h and h["status"] == "ok"
        busy = subprocess.run([sys.executable, "-m", "fairexpr.cli", "serve", "--checkpoint", str(ckpt), "--crops",
                               "--port", str(info["port"])], capture_output=True, text=True, env=env, timeout=120)
        assert busy.returncode == 2 and "Traceback" not in busy.stderr
        assert f"cannot listen on 127.0.0.1:{info['port']}" in busy.stderr
    finally:
        p.terminate()
        p.wait(timeout=30)
