"""The headless-browser helper cleans up after itself: the whole process group stops and the profile is removed
even while exiting helper processes are still writing into it (CI once failed on ``Directory not empty``)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from fairexpr.inference.devtools import _remove_tree, _stop_process_group, find_chromium, headless_chromium


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); read its state
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_stop_process_group_kills_children_that_outlive_the_leader(tmp_path):
    pidfile = tmp_path / "child.pid"
    # leader starts a child that ignores SIGTERM, writes its pid, then the leader waits
    script = ("import os, signal, subprocess, sys, time\n"
              f"c = subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
              f"open({str(pidfile)!r}, 'w').write(str(c.pid))\n"
              "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    end = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text()):
        assert time.monotonic() < end, "child did not start"
        time.sleep(0.05)
    child = int(pidfile.read_text())
    assert _alive(child)
    _stop_process_group(proc, timeout=5)
    assert proc.poll() is not None
    end = time.monotonic() + 5
    while _alive(child) and time.monotonic() < end:
        time.sleep(0.05)
    assert not _alive(child), "a helper that ignores SIGTERM must not outlive the browser"


def test_remove_tree_retries_while_something_still_writes(tmp_path):
    root = tmp_path / "profile"
    (root / "Default").mkdir(parents=True)
    stop = time.monotonic() + 0.4

    def writer():
        i = 0
        while time.monotonic() < stop:
            try:
                (root / "Default").mkdir(parents=True, exist_ok=True)
                (root / "Default" / f"f{i}").write_text("x")
            except OSError:
                pass
            i += 1

    th = threading.Thread(target=writer)
    th.start()
    time.sleep(0.05)
    _remove_tree(str(root), attempts=40, interval=0.05)
    th.join()
    _remove_tree(str(root))  # the writer may have recreated it after the last attempt; a second call finishes
    assert not root.exists()
    _remove_tree(str(root))  # absent: no error


@pytest.mark.skipif(not find_chromium(), reason="chromium not installed")
@pytest.mark.skipif(os.environ.get("FAIREXPR_SKIP_BROWSER") == "1", reason="FAIREXPR_SKIP_BROWSER=1")
def test_headless_chromium_leaves_no_profile_or_processes_behind():
    with headless_chromium() as cdp:
        assert cdp.eval("1 + 1") == 2
        profile = next(a.split("=", 1)[1] for a in open(f"/proc/{_browser_pid()}/cmdline").read().split("\0")
                       if a.startswith("--user-data-dir="))
        assert os.path.isdir(profile)
    assert not os.path.exists(profile)
    assert not _processes_using(profile)


def _browser_pid() -> int:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = open(f"/proc/{pid}/cmdline").read()
            except OSError:
                continue
            if "fairexpr-chromium-" in cmd and "--remote-debugging-port" in cmd and "--type=" not in cmd:
                return int(pid)
    raise AssertionError("no chromium process with a fairexpr profile")


def _processes_using(profile: str) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if profile in open(f"/proc/{pid}/cmdline").read() and _alive(int(pid)):
                    out.append(int(pid))
            except OSError:
                continue
    return out


def test_remove_tree_warns_when_the_profile_cannot_go(tmp_path, monkeypatch):
    d = tmp_path / "profile"
    d.mkdir()

    def stuck(path, ignore_errors=False):
        if not ignore_errors:
            raise OSError("Directory not empty")

    monkeypatch.setattr(shutil, "rmtree", stuck)
    with pytest.warns(RuntimeWarning, match="could not remove chromium's temporary profile"):
        _remove_tree(str(d), attempts=2, interval=0.0)
