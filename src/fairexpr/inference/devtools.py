"""Drive a headless Chromium over the Chrome DevTools Protocol (CDP) against a page on 127.0.0.1.

Used by the web service's end-to-end browser test and by ``benchmarks/readme_figures.py`` (the README's
screenshot of ``fairexpr serve``). Needs Debian's ``chromium`` and ``websocket-client`` (test extra).
Chromium is started with the flags a closed network needs (no background networking, no component
updates, no sync) and a fresh profile directory; it only ever talks to the loopback address it is sent to.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import warnings
from typing import Any, Callable, Iterator


class CDP:
    """Minimal CDP client over one page target's websocket (``websocket-client``)."""

    def __init__(self, ws_url: str, timeout: float = 30.0) -> None:
        try:
            import websocket
        except ImportError:
            raise ImportError("fairexpr.inference.devtools needs websocket-client: pip install 'fairexpr[test]' "
                              "(or pip install websocket-client)") from None
        self.ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self.i = 0

    def __call__(self, method: str, **params: Any) -> dict:
        self.i += 1
        self.ws.send(json.dumps({"id": self.i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expr: str) -> Any:
        """Evaluate a JavaScript expression in the page and return its JSON value."""
        return self("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get("value")

    def wait_for(self, expr: str, what: str, timeout: float = 20.0) -> Any:
        """Poll ``expr`` until it is truthy; raise ``TimeoutError`` naming ``what`` otherwise."""
        return wait_until(lambda: self.eval(expr), what, timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond: Callable[[], Any], what: str, timeout: float = 20.0, interval: float = 0.05) -> Any:
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def headless_chromium(window: tuple[int, int] = (1280, 900)) -> Iterator[CDP]:
    """Start headless Chromium with a throw-away profile; yield a :class:`CDP` attached to its blank page."""
    chromium = find_chromium()
    if not chromium:
        raise FileNotFoundError("Debian's chromium is not installed (apt-get install -y chromium, or `make browser`)")
    port = free_port()
    profile = tempfile.mkdtemp(prefix="fairexpr-chromium-")
    try:
        # A session of its own, so the browser's helper processes (zygote, renderer, crashpad) can be stopped as a
        # group: they keep writing into the profile for a moment after the main process exits.
        proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                                 "--hide-scrollbars", f"--window-size={window[0]},{window[1]}", f"--user-data-dir={profile}",
                                 f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        cdp = None
        try:
            def pages():
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=1) as r:
                        return [t for t in json.load(r) if t.get("type") == "page"]
                except OSError:
                    return None

            cdp = CDP(wait_until(pages, "chromium's DevTools page target", timeout=30, interval=0.1)[0]["webSocketDebuggerUrl"])
            cdp("Page.enable")
            yield cdp
        finally:
            if cdp is not None:
                cdp.close()
            _stop_process_group(proc)
    finally:
        _remove_tree(profile)


def _stop_process_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the browser's process group, SIGKILL what is left after ``timeout`` s, reap the main process."""
    def signal_group(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    signal_group(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_group(signal.SIGKILL)
        proc.wait()
    signal_group(signal.SIGKILL)  # helpers that outlived the main process


def _remove_tree(path: str, attempts: int = 20, interval: float = 0.1) -> None:
    """Remove the throw-away profile; retry while exiting helper processes still create files in it."""
    for _ in range(attempts - 1):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(interval)
    shutil.rmtree(path, ignore_errors=True)
    if os.path.exists(path):
        warnings.warn(f"could not remove chromium's temporary profile {path}", RuntimeWarning, stacklevel=2)


def upload_on_service_page(cdp: CDP, url: str, image_path: str, timeout: float = 60.0) -> str:
    """Open the service page at ``url``, upload ``image_path`` through its form, wait for the result.

    Returns the page's final state (``"done"`` on success; the status text is in ``#status``).
    """
    cdp("Page.navigate", url=url)
    cdp.wait_for("document.readyState === 'complete' && !!document.getElementById('file')", "the upload page")
    doc = cdp("DOM.getDocument")
    node = cdp("DOM.querySelector", nodeId=doc["root"]["nodeId"], selector="#file")["nodeId"]
    cdp("DOM.setFileInputFiles", nodeId=node, files=[str(image_path)])
    cdp.eval("document.getElementById('form').requestSubmit()")
    return cdp.wait_for("document.body.dataset.state || ''", "the prediction to appear on the page", timeout)
