"""The host memory allocator for training on a CPU (``train.allocator``).

A training step on a CPU allocates and frees the same large activation buffers (12 MB each for MobileNetV2's
first layers at 64 px, batch 96) every step. With glibc's defaults a freed buffer is either returned to the
kernel (``munmap`` above the mmap threshold, heap trimming above the trim threshold) and the next step's
allocation faults every page back in, zero-filled: ~30 000 minor page faults per MobileNetV2 step, measured with
``getrusage`` — 10-15 % of the step. ``tuned`` keeps that memory in the process:

* ``M_MMAP_THRESHOLD`` = 32 MiB (glibc's maximum on 64-bit): buffers up to 32 MiB come from the heap, not
  from a fresh ``mmap`` each time;
* ``M_TRIM_THRESHOLD`` = 1 GiB: freed memory at the top of the heap is kept (up to 1 GiB) instead of
  trimmed after every step;
* ``M_TOP_PAD`` = 64 MiB: the heap grows in 64 MiB steps.

Measured on the 2-core development machine (``benchmarks/results/engine_speed.json``): minor faults per
MobileNetV2 step ~30 000 -> ~9 000 and +10-15 % images/s for the compute-only loop and the engine alike. Setting
only the trim threshold is *worse* than the defaults (it switches off glibc's dynamic mmap threshold, so every
buffer is mmapped): the three go together. The price is resident memory: up to ~1 GiB of freed heap stays
mapped for the rest of the process.

``auto`` (default) tunes when training on the CPU in a process whose C library is glibc, and leaves the
allocator alone otherwise (a GPU run's activations are not host memory); ``tuned`` insists (a ConfigError where
glibc's ``mallopt`` is missing: musl, macOS, Windows); ``system`` never touches it. The settings are
process-wide and stay for the rest of the process (``mallopt`` has no "undo" that restores glibc's dynamic
thresholds).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

from ..config import ALLOCATORS, ConfigError

#: glibc's mallopt parameter numbers (malloc.h) and the values ``tuned`` sets
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
TUNED = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 64 << 20}


@functools.lru_cache(maxsize=1)
def _glibc_mallopt():
    """glibc's ``mallopt`` or None (not glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it
        fn = libc.mallopt
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return fn


def configure_allocator(mode: str, device_type: str = "cpu") -> str:
    """Apply ``train.allocator`` (``auto`` | ``tuned`` | ``system``); returns what is in effect: ``tuned`` or ``system``."""
    if mode not in ALLOCATORS:
        raise ConfigError(f"train.allocator must be {'|'.join(ALLOCATORS)}, got {mode!r}")
    if mode == "system" or (mode == "auto" and device_type != "cpu"):
        return "system"
    mallopt = _glibc_mallopt()
    if mallopt is None:
        if mode == "tuned":
            raise ConfigError("train.allocator: tuned needs glibc's mallopt (Linux with glibc); this C library has none "
                              "-- use auto or system")
        return "system"
    for param, value in TUNED.items():
        if mallopt(param, value) != 1:
            raise ConfigError(f"train.allocator: glibc's mallopt({param}, {value}) failed -- use system")
    return "tuned"
