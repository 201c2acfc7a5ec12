"""train.allocator: glibc malloc tuned so a CPU training step stops faulting its activation buffers back in."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from fairexpr.config import ConfigError
from fairexpr.engine import allocator as al
from fairexpr.engine import fit

GLIBC = al._glibc_mallopt() is not None


class Recorder:
    def __init__(self, ret: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.ret = ret

    def __call__(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.ret


@pytest.fixture
def fake_mallopt(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(al, "_glibc_mallopt", lambda: rec)
    return rec


def test_tuned_sets_the_three_thresholds(fake_mallopt):
    assert al.configure_allocator("tuned") == "tuned"
    # M_MMAP_THRESHOLD = 32 MiB, M_TRIM_THRESHOLD = 1 GiB, M_TOP_PAD = 64 MiB (glibc's malloc.h numbers)
    assert sorted(fake_mallopt.calls) == sorted([(-3, 33554432), (-1, 1073741824), (-2, 67108864)])


def test_auto_tunes_on_cpu_only(fake_mallopt):
    assert al.configure_allocator("auto", "cuda") == "system"
    assert fake_mallopt.calls == []
    assert al.configure_allocator("auto", "cpu") == "tuned"
    assert len(fake_mallopt.calls) == 3


def test_system_leaves_malloc_alone(fake_mallopt):
    assert al.configure_allocator("system", "cpu") == "system"
    assert fake_mallopt.calls == []


def test_tuned_without_glibc_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(al, "_glibc_mallopt", lambda: None)
    assert al.configure_allocator("auto") == "system"  # auto falls back silently only because nothing can be tuned
    with pytest.raises(ConfigError, match="train.allocator: tuned needs glibc"):
        al.configure_allocator("tuned")


def test_a_failing_mallopt_is_reported(monkeypatch):
    rec = Recorder(ret=0)
    monkeypatch.setattr(al, "_glibc_mallopt", lambda: rec)
    with pytest.raises(ConfigError, match=r"mallopt\(-3, 33554432\) failed"):
        al.configure_allocator("tuned")


def test_bad_value_in_config(cfg_factory):
    with pytest.raises(ConfigError, match="train.allocator.*auto\\|tuned\\|system.*'fast'"):
        cfg_factory(train={"allocator": "fast"})
    with pytest.raises(ConfigError, match="train.allocator must be"):
        al.configure_allocator("fast")


_FAULTS = textwrap.dedent("""
    import ctypes, resource, sys, torch
    # Transparent huge pages (a kernel set to "always", as some CI hosts are) map 2 MiB per fault and hide the
    # per-page cost being measured; PR_SET_THP_DISABLE (41) makes the count independent of the host's THP setting.
    if ctypes.CDLL(None, use_errno=True).prctl(41, 1, 0, 0, 0) != 0:
        raise SystemExit("prctl(PR_SET_THP_DISABLE) failed")
    torch.set_num_threads(1)
    from fairexpr.engine.allocator import configure_allocator
    print(configure_allocator(sys.argv[1]))
    from fairexpr.models import create_model
    m = create_model("mobilenet_v2", 7, in_chans=1).to(memory_format=torch.channels_last)
    x = torch.randn(16, 1, 64, 64).contiguous(memory_format=torch.channels_last)
    for _ in range(3):
        m(x).sum().backward()
    per_step = []
    for _ in range(7):
        a = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        m(x).sum().backward()
        per_step.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - a)
    # the median step: a one-off allocation (a new arena, a grown pool) must not decide it
    print(sorted(per_step)[len(per_step) // 2])
""")


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt is not available in this C library")
def test_tuned_stops_page_faults_of_a_training_step():
    """The effect itself, each mode in a fresh process (the settings are process-wide): MobileNetV2 steps at batch 16
    fault thousands of pages back in per step with glibc's defaults and almost none tuned. Huge pages are off in both
    children: with THP "always" the kernel maps 2 MiB per fault and the default allocator faults ~80 times per step
    instead of thousands (seen on a CI host), which is the kernel hiding the cost, not the allocator removing it."""
    # Up to three fresh pairs: once, in a full suite run beside two training processes on the same host, the default
    # allocator's child faulted only 80 pages per step (as under huge pages) while every isolated run showed
    # thousands; the effect must show in one pair, and every pair is reported if none shows it.
    tries = []
    for _ in range(3):
        faults = {}
        for mode in ("system", "tuned"):
            r = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True,
                               env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
            applied, per_step = r.stdout.split()
            assert applied == mode
            faults[mode] = float(per_step)
        tries.append(faults)
        if faults["system"] > 1000 and faults["tuned"] < 0.25 * faults["system"]:
            break
    else:
        pytest.fail(f"the tuned allocator did not remove the default's page faults in any of 3 pairs: {tries}")


def test_engine_records_the_allocator(cfg_factory, tmp_path):
    res = fit(cfg_factory(train={"epochs": 1, "allocator": "system"}, data={"val": None, "val_split": None}), tmp_path / "sys")
    assert res["allocator"] == "system"
    res = fit(cfg_factory(train={"epochs": 1}, data={"val": None, "val_split": None}), tmp_path / "auto")
    assert res["allocator"] == ("tuned" if GLIBC else "system")
