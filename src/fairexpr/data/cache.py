"""Decode a dataset once into a uint8 tensor ``[N, C, H, W]``, cached on disk, for fast CPU training.

:func:`materialize` decodes and resizes every image once (Pillow, a thread pool: Pillow releases the
GIL while decoding/resizing), then stores the array as an ``.npz`` under ``cache_dir`` (default:
``$FAIREXPR_CACHE`` or ``~/.cache/fairexpr``). The cache key hashes the sample paths with their file
sizes and modification times (inline pixels: their bytes), the target size and the channel count, so
a changed dataset is decoded again. Files are written atomically (temporary file + ``os.replace``).

Images are resized to ``size x size`` with bilinear (antialiased) resampling; non-square images are
stretched (FER sets are square face crops). ``channels=3`` on grayscale images replicates the channel;
``channels=1`` on colour images takes the luma (``PIL.Image.convert("L")``).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from .base import BadFilePolicy, DataError, FERDataset, Sample, SkipReport, decode_image

__all__ = ["ArrayData", "materialize", "default_cache_dir", "cache_key"]

_CACHE_VERSION = 1


@dataclass
class ArrayData:
    """A decoded dataset: ``images`` uint8 ``[N,C,H,W]``, ``labels`` int64 ``[N]``, optional ``soft_labels``
    float32 ``[N,K]``, the canonical ``classes``, the ``samples`` (aligned with rows) and the ``skipped`` report
    (scan-time exclusions plus files that failed to decode under ``on_bad_file='skip'``)."""

    images: torch.Tensor
    labels: torch.Tensor
    soft_labels: torch.Tensor | None
    classes: tuple[str, ...]
    samples: list[Sample]
    skipped: SkipReport = field(default_factory=SkipReport)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.images[i], "label": int(self.labels[i]), "index": i}
        if self.soft_labels is not None:
            out["soft_label"] = self.soft_labels[i]
        return out

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> "ArrayData":
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ArrayData(self.images[idx], self.labels[idx],
                         None if self.soft_labels is None else self.soft_labels[idx], self.classes,
                         [self.samples[int(i)] for i in idx], self.skipped)


def default_cache_dir() -> Path:
    return Path(os.environ.get("FAIREXPR_CACHE") or Path.home() / ".cache" / "fairexpr")


def cache_key(samples: Sequence[Sample], size: int, channels: int) -> str:
    """Hash of (paths, file sizes, mtimes / inline pixel bytes, size, channels)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"fairexpr-cache-v{_CACHE_VERSION}|{size}|{channels}|{len(samples)}\n".encode())
    for s in samples:
        h.update(s.path.encode("utf-8", "surrogateescape"))
        if s.pixels is not None:
            arr = np.ascontiguousarray(s.pixels, dtype=np.uint8)
            h.update(f"|px{arr.shape}|".encode())
            h.update(arr.tobytes())
        else:
            try:
                st = os.stat(s.path)
                h.update(f"|{st.st_size}|{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(b"|missing\n")
    return h.hexdigest()


def _decode(sample: Sample, size: int, mode: str) -> np.ndarray:
    """Decode + resize one sample to ``[C, size, size]`` uint8; DataError naming the file on failure."""
    if sample.pixels is not None:
        im = Image.fromarray(np.asarray(sample.pixels, dtype=np.uint8))
    else:
        try:
            with Image.open(sample.path) as f:
                if f.format == "JPEG" and min(f.size) >= 2 * size:
                    f.draft(mode, (size, size))  # DCT-domain downscale: much faster for big JPEGs
                f.load()
                im = f.copy()
        except Exception:
            im = decode_image(sample.path, mode)  # re-decode only to raise the canonical DataError
    im = im.convert(mode)
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def materialize(dataset: FERDataset, size: int, channels: int, *, cache_dir: str | os.PathLike | None = None,
                progress: bool = True, num_workers: int = 2, on_bad_file: BadFilePolicy = "error") -> ArrayData:
    """Decode every image of ``dataset`` once to ``[N, channels, size, size]`` uint8 (disk-cached).

    ``on_bad_file='error'`` raises the first decoding problem as :class:`DataError` naming the file;
    ``'skip'`` drops such samples and lists them (with the reason) in ``ArrayData.skipped``.
    ``cache_dir=False`` disables the disk cache.
    """
    if channels not in (1, 3):
        raise DataError(f"materialize: channels must be 1 or 3, got {channels}")
    if int(size) < 1:
        raise DataError(f"materialize: size must be positive, got {size}")
    if on_bad_file not in ("error", "skip"):
        raise DataError(f"on_bad_file must be 'error' or 'skip', got {on_bad_file!r}")
    size = int(size)
    mode = "L" if channels == 1 else "RGB"
    samples = dataset.samples
    use_cache = cache_dir is not False
    cdir = Path(cache_dir) if use_cache and cache_dir is not None else default_cache_dir()
    file = cdir / f"{cache_key(samples, size, channels)}.npz" if use_cache else None

    loaded = _load(file) if file is not None and file.is_file() else None
    if loaded is None:
        images, ok, bad_idx, bad_reason = _decode_all(samples, size, mode, channels, progress, num_workers,
                                                      dataset.name)
        if file is not None:
            _save(file, images, ok, bad_idx, bad_reason)
    else:
        images, ok, bad_idx, bad_reason = loaded

    skipped = SkipReport(list(dataset.skipped.items))
    if len(bad_idx):
        if on_bad_file == "error":
            more = f" (and {len(bad_idx) - 1} more unreadable file(s))" if len(bad_idx) > 1 else ""
            raise DataError(f"{bad_reason[0]}{more}; use on_bad_file='skip' / --on-bad-file skip to skip and list them")
        for i, r in zip(bad_idx, bad_reason):
            skipped.add(samples[int(i)].path, str(r))
    kept = [samples[int(i)] for i in ok]
    labels = torch.tensor([s.label for s in kept], dtype=torch.int64)
    soft = None
    if kept and all(s.soft_label is not None for s in kept):
        soft = torch.tensor([s.soft_label for s in kept], dtype=torch.float32)
    return ArrayData(torch.from_numpy(images), labels, soft, dataset.classes, kept, skipped)


def _decode_all(samples: Sequence[Sample], size: int, mode: str, channels: int, progress: bool, num_workers: int,
                name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    from tqdm.auto import tqdm

    out = np.empty((len(samples), channels, size, size), dtype=np.uint8)
    errors: dict[int, str] = {}

    def work(i: int) -> None:
        try:
            out[i] = _decode(samples[i], size, mode)
        except DataError as e:
            errors[i] = str(e)

    bar = tqdm(total=len(samples), desc=f"decoding {name or 'dataset'}", unit="img", disable=not progress,
               leave=False)
    chunk = 512
    chunks = [range(a, min(a + chunk, len(samples))) for a in range(0, len(samples), chunk)]

    def run_chunk(r: range) -> int:
        for i in r:
            work(i)
        return len(r)

    if num_workers > 1 and len(chunks) > 1:
        with ThreadPool(num_workers) as pool:
            for n in pool.imap_unordered(run_chunk, chunks):
                bar.update(n)
    else:
        for r in chunks:
            bar.update(run_chunk(r))
    bar.close()
    bad_idx = np.array(sorted(errors), dtype=np.int64)
    ok_mask = np.ones(len(samples), dtype=bool)
    ok_mask[bad_idx] = False
    ok = np.flatnonzero(ok_mask)
    images = out if bad_idx.size == 0 else out[ok]
    return images, ok, bad_idx, [errors[int(i)] for i in bad_idx]


def _save(file: Path, images: np.ndarray, ok: np.ndarray, bad_idx: np.ndarray, bad_reason: list[str]) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=file.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, ok=ok, bad_idx=bad_idx, bad_reason=np.array(bad_reason, dtype=np.str_))
        from .._io import current_umask

        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, file)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load(file: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]] | None:
    """Read a cache file; a damaged/foreign file is ignored (re-decoded and overwritten)."""
    try:
        with np.load(file, allow_pickle=False) as z:
            return z["images"], z["ok"], z["bad_idx"], [str(x) for x in z["bad_reason"]]
    except Exception:
        return None
