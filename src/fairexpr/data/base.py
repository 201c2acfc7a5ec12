"""Core data types: samples, datasets, the adapter registry and the ``FORMAT:PATH`` address.

Data flows one way: an *adapter* scans files on disk in one published layout and returns
:class:`Sample` records already mapped into the canonical label space; :class:`FERDataset` wraps the
records and decodes images; everything downstream (samplers, engine, evaluation) only sees
canonical labels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
from PIL import Image

from ..labels import CANONICAL7, CANONICAL8

BadFilePolicy = Literal["error", "skip"]

# Refuse decompression-bomb sized images early (pixels). FER faces are tiny; 50 MP is generous.
Image.MAX_IMAGE_PIXELS = 50_000_000


from ..errors import DataError  # noqa: E402  (defined in the bottom layer; re-exported here)


@dataclass(frozen=True)
class Sample:
    """One labelled (or unlabelled) face image.

    ``label`` indexes the dataset's ``classes`` (a canonical tuple), ``-1`` for unlabelled images.
    ``soft_label`` holds a vote/probability distribution over ``classes`` when the protocol has one.
    ``pixels`` holds inline pixel data for formats without image files (``fer2013.csv``).
    """

    path: str
    label: int
    split: str
    subject: str | None = None
    sequence: str | None = None
    soft_label: tuple[float, ...] | None = None
    pixels: np.ndarray | None = field(default=None, compare=False, repr=False)
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass
class SkipReport:
    """Files an adapter skipped under ``on_bad_file='skip'`` — counted and listed, never silent."""

    items: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def add(self, path: str | os.PathLike, reason: str) -> None:
        self.items.append((str(path), reason))

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class ScanResult:
    samples: list[Sample]
    classes: tuple[str, ...]
    skipped: SkipReport = field(default_factory=SkipReport)
    splits: tuple[str, ...] = ()


AdapterFn = Callable[..., ScanResult]
_ADAPTERS: dict[str, tuple[AdapterFn, str]] = {}
_VIRTUAL: set[str] = set()


def register_adapter(name: str, description: str = "", *, virtual: bool = False) -> Callable[[AdapterFn], AdapterFn]:
    """Register ``fn(root: Path, split: str | None, *, on_bad_file, **options) -> ScanResult``.

    ``virtual=True`` marks formats whose PATH part is not a file system path (``synthetic:PROFILE``)."""

    def deco(fn: AdapterFn) -> AdapterFn:
        _ADAPTERS[name] = (fn, description or (fn.__doc__ or "").strip().splitlines()[0])
        if virtual:
            _VIRTUAL.add(name)
        return fn

    return deco


def list_adapters() -> dict[str, str]:
    from . import adapters  # noqa: F401  (registers)

    return {k: v[1] for k, v in sorted(_ADAPTERS.items())}


def parse_spec(spec: str) -> tuple[str, Path]:
    """Split ``FORMAT:PATH``; environment variables and ``~`` in PATH are expanded."""
    if not isinstance(spec, str) or ":" not in spec:
        raise DataError(f"dataset address {spec!r} must look like FORMAT:PATH, e.g. fer2013:/data/fer2013")
    fmt, _, path = spec.partition(":")
    fmt = fmt.strip().lower()
    from . import adapters  # noqa: F401

    if fmt not in _ADAPTERS:
        raise DataError(f"unknown dataset format {fmt!r} in {spec!r}; known formats: {', '.join(sorted(_ADAPTERS))}")
    return fmt, Path(os.path.expanduser(os.path.expandvars(path)))


def scan(spec: str, split: str | None = None, *, on_bad_file: BadFilePolicy = "error", **options: Any) -> ScanResult:
    """Scan a dataset address into canonical samples (no pixels decoded unless the format is inline)."""
    fmt, root = parse_spec(spec)
    if on_bad_file not in ("error", "skip"):
        raise DataError(f"on_bad_file must be 'error' or 'skip', got {on_bad_file!r}")
    if fmt not in _VIRTUAL and not root.exists():
        raise DataError(f"{fmt}: path {str(root)!r} does not exist")
    fn = _ADAPTERS[fmt][0]
    return fn(root, split, on_bad_file=on_bad_file, **options)


def decode_image(path: str | os.PathLike, mode: str = "L") -> Image.Image:
    """Open and fully decode an image, converting errors into :class:`DataError` naming the file."""
    p = Path(path)
    try:
        if p.stat().st_size == 0:
            raise DataError(f"{p}: file is empty (0 bytes); expected an image")
        with Image.open(p) as im:
            im.load()
            return im.convert(mode)
    except DataError:
        raise
    except Image.DecompressionBombError as e:
        raise DataError(f"{p}: image is too large ({e}); refusing to decode (limit {Image.MAX_IMAGE_PIXELS} px)") from None
    except FileNotFoundError:
        raise DataError(f"{p}: file not found") from None
    except Exception as e:  # PIL raises many types for corrupt/non-image files
        raise DataError(f"{p}: cannot decode as an image ({type(e).__name__}: {e})") from None


class FERDataset:
    """A torch-style dataset over canonical :class:`Sample` records.

    ``__getitem__`` returns ``{"image": Tensor[C,H,W] float in [0,1] (after ``transform``),
    "label": int, "index": int}`` plus ``"soft_label"`` when present.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        classes: tuple[str, ...],
        *,
        name: str = "",
        mode: str = "L",
        transform: Callable | None = None,
        skipped: SkipReport | None = None,
    ) -> None:
        if classes not in (CANONICAL7, CANONICAL8):
            raise DataError(f"dataset classes must be a canonical label space, got {classes}")
        self.samples = list(samples)
        self.classes = classes
        self.name = name
        self.mode = mode
        self.transform = transform
        self.skipped = skipped or SkipReport()

    @classmethod
    def from_spec(cls, spec: str, split: str | None = None, *, on_bad_file: BadFilePolicy = "error", mode: str = "L",
                  transform: Callable | None = None, **options: Any) -> "FERDataset":
        res = scan(spec, split, on_bad_file=on_bad_file, **options)
        return cls(res.samples, res.classes, name=f"{spec}" + (f"[{split}]" if split else ""), mode=mode,
                   transform=transform, skipped=res.skipped)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return np.fromiter((s.label for s in self.samples), dtype=np.int64, count=len(self.samples))

    def class_counts(self) -> np.ndarray:
        lab = self.labels
        lab = lab[lab >= 0]
        return np.bincount(lab, minlength=len(self.classes))

    def load_image(self, i: int) -> Image.Image:
        s = self.samples[i]
        if s.pixels is not None:
            arr = np.asarray(s.pixels, dtype=np.uint8)
            return Image.fromarray(arr).convert(self.mode)
        return decode_image(s.path, self.mode)

    def subset(self, indices: Sequence[int]) -> "FERDataset":
        return FERDataset([self.samples[i] for i in indices], self.classes, name=self.name, mode=self.mode,
                          transform=self.transform, skipped=self.skipped)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torchvision.transforms.v2.functional as F

        img = self.load_image(i)
        x = F.to_dtype(F.to_image(img), dtype=__import__("torch").float32, scale=True)
        if self.transform is not None:
            x = self.transform(x)
        s = self.samples[i]
        out: dict[str, Any] = {"image": x, "label": s.label, "index": i}
        if s.soft_label is not None:
            out["soft_label"] = __import__("torch").tensor(s.soft_label, dtype=__import__("torch").float32)
        return out
