"""Helpers shared by the dataset adapters: bad-file policy, cheap file checks, class mapping.

Scanning never decodes images; it only checks what is cheap (existence, 0-byte size, extension).
Decoding errors surface later in :func:`fairexpr.data.base.decode_image` (audit, cache, loading).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from ...labels import CANONICAL7, CANONICAL8, LabelError, canonical_name, label_space
from ..base import BadFilePolicy, DataError, SkipReport

#: file extensions accepted as images (lower case, with dot)
IMAGE_EXTS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp",
                                        ".pgm", ".ppm", ".pbm"})
#: operating-system litter that is ignored everywhere (never reported as bad files)
IGNORED_NAMES: frozenset[str] = frozenset({"Thumbs.db", "desktop.ini", "__MACOSX"})


def is_ignored(name: str) -> bool:
    """Hidden files (``.DS_Store``, ``._x.jpg``) and OS litter are not data."""
    return name.startswith(".") or name in IGNORED_NAMES


class BadFiles:
    """Applies ``on_bad_file``: raise :class:`DataError` or record ``(path, reason)`` in a SkipReport."""

    def __init__(self, fmt: str, on_bad_file: BadFilePolicy, report: SkipReport | None = None) -> None:
        if on_bad_file not in ("error", "skip"):
            raise DataError(f"on_bad_file must be 'error' or 'skip', got {on_bad_file!r}")
        self.fmt = fmt
        self.policy = on_bad_file
        self.report = report if report is not None else SkipReport()

    def bad(self, path: str | os.PathLike, reason: str) -> None:
        """A bad file/row/folder: raise under ``error``, record under ``skip``."""
        if self.policy == "error":
            raise DataError(f"{self.fmt}: {path}: {reason} (use on_bad_file='skip' / --on-bad-file skip to skip "
                            f"and list such files)")
        self.report.add(path, reason)

    def exclude(self, path: str | os.PathLike, reason: str) -> None:
        """A protocol exclusion (not an error): always recorded, never raised."""
        self.report.add(path, reason)


def image_entries(folder: Path, bad: BadFiles, *, recursive: bool = False) -> Iterator[tuple[str, int]]:
    """Yield ``(path, size)`` of image files in ``folder``; 0-byte and non-image files go to ``bad``."""
    stack = [folder]
    while stack:
        d = stack.pop()
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            bad.bad(d, f"cannot list folder ({e.strerror})")
            continue
        for e in entries:
            if is_ignored(e.name):
                continue
            if e.is_dir():
                if recursive:
                    stack.append(Path(e.path))
                else:
                    bad.bad(e.path, "unexpected sub-folder; expected image files here")
                continue
            ext = os.path.splitext(e.name)[1].lower()
            if ext not in IMAGE_EXTS:
                bad.bad(e.path, f"not an image file (extension {ext or 'none'!r}; expected one of "
                                f"{', '.join(sorted(IMAGE_EXTS))})")
                continue
            size = e.stat().st_size
            if size == 0:
                bad.bad(e.path, "file is empty (0 bytes); expected an image")
                continue
            yield e.path, size


def check_file(path: Path, bad: BadFiles, sizes: Mapping[str, int] | None = None) -> bool:
    """Cheap check of a file named by an annotation: exists, non-empty, image extension."""
    if sizes is not None:
        size = sizes.get(path.name)
        if size is None:
            bad.bad(path, "image listed in the annotations is missing")
            return False
    else:
        try:
            size = path.stat().st_size
        except OSError:
            bad.bad(path, "image listed in the annotations is missing")
            return False
    if path.suffix.lower() not in IMAGE_EXTS:
        bad.bad(path, f"not an image file (extension {path.suffix or 'none'!r})")
        return False
    if size == 0:
        bad.bad(path, "file is empty (0 bytes); expected an image")
        return False
    return True


def folder_sizes(folder: Path) -> dict[str, int]:
    """``{file name: size}`` for one folder, one ``scandir`` (fast membership + 0-byte checks)."""
    out: dict[str, int] = {}
    with os.scandir(folder) as it:
        for e in it:
            if e.is_file():
                out[e.name] = e.stat().st_size
    return out


def subdirs(folder: Path) -> list[str]:
    """Names of the visible sub-folders, sorted."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not is_ignored(e.name))


def require_dir(path: Path, fmt: str, what: str) -> Path:
    """``path`` must be a folder; otherwise a :class:`DataError` naming it and the expected layout."""
    if not path.is_dir():
        raise DataError(f"{fmt}: missing folder {str(path)!r}; expected {what}")
    return path


def require_file(path: Path, fmt: str, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{fmt}: missing file {str(path)!r}; expected {what}")
    return path


def check_split(fmt: str, split: str | None, available: Iterable[str], aliases: Mapping[str, tuple[str, ...]] = {}
                ) -> tuple[str, ...]:
    """Resolve a requested split into the official split names it covers (``None``/``"all"`` = every split)."""
    avail = tuple(available)
    if split is None or split == "all":
        return avail
    key = str(split).strip().lower()
    if key in avail:
        return (key,)
    if key in aliases:
        return aliases[key]
    raise DataError(f"{fmt}: unknown split {split!r}; this dataset has splits "
                    f"{', '.join(avail + tuple(aliases))} (or 'all')")


def class_space(num_classes: int | str, fmt: str) -> tuple[str, ...]:
    try:
        return label_space(int(num_classes))
    except (LabelError, ValueError):
        raise DataError(f"{fmt}: option num_classes must be 7 or 8, got {num_classes!r}") from None


def space_for(names: Iterable[str]) -> tuple[str, ...]:
    """The smallest canonical space holding all ``names`` (8 classes only when contempt occurs)."""
    return CANONICAL8 if "contempt" in set(names) else CANONICAL7


def to_canonical(name: str, fmt: str, where: str | os.PathLike) -> str:
    """``canonical_name`` with the error turned into a DataError naming the file/folder."""
    try:
        return canonical_name(name)
    except LabelError as e:
        raise DataError(f"{fmt}: {where}: {e}") from None


def parse_class_map(class_map: Mapping[str, str] | str | None, fmt: str) -> dict[str, str]:
    """Parse ``{"a": "anger"}`` or ``"a=anger,b=happiness"`` into ``{folder name: canonical name}``."""
    if class_map is None or class_map == "":
        return {}
    items: Iterable[tuple[str, str]]
    if isinstance(class_map, str):
        pairs = []
        for part in class_map.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise DataError(f"{fmt}: class_map entry {part!r} must look like FOLDER=CLASS "
                                f"(e.g. 'a=anger,b=happiness')")
            k, _, v = part.partition("=")
            pairs.append((k.strip(), v.strip()))
        items = pairs
    elif isinstance(class_map, Mapping):
        items = [(str(k), str(v)) for k, v in class_map.items()]
    else:
        raise DataError(f"{fmt}: class_map must be a dict or a 'a=anger,b=happiness' string, got {type(class_map).__name__}")
    out = {}
    for k, v in items:
        out[k] = to_canonical(v, fmt, f"class_map[{k!r}]")
    return out


def as_bool(value: object, fmt: str, option: str) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise DataError(f"{fmt}: option {option} must be a boolean, got {value!r}")


def no_options(fmt: str, options: Mapping[str, object]) -> None:
    if options:
        raise DataError(f"{fmt}: unknown option(s) {', '.join(sorted(options))}")


def canonical_or_none(name: str) -> str | None:
    """Canonical name of a class spelling, or ``None`` when it is not a known alias."""
    try:
        return canonical_name(name)
    except LabelError:
        return None


def is_empty_dir(folder: Path) -> bool:
    """True when ``folder`` holds nothing but hidden files / OS litter."""
    with os.scandir(folder) as it:
        return not any(not is_ignored(e.name) for e in it)


def class_folders(top: Path, bad: BadFiles, resolve: Callable[[str], str | None], expected: str
                  ) -> list[tuple[Path, str]]:
    """``(class folder, canonical name)`` for each sub-folder of ``top``; unknown/empty ones go to ``bad``."""
    out = []
    for name in subdirs(top):
        d = top / name
        canon = resolve(name)
        if canon is None:
            bad.bad(d, f"unknown class folder {name!r}; expected one of {expected}")
            continue
        if is_empty_dir(d):
            bad.bad(d, "class folder is empty; expected at least one image")
            continue
        out.append((d, canon))
    return out

