"""The one atomic file writer of the package: a temp file beside the target, flushed and fsynced, then
``os.replace``-d into place, with the permissions an ordinary ``open(path, "w")`` would give (``0o666 & ~umask``;
``mkstemp`` alone makes 0600 files). A writer killed mid-way leaves at most a ``.<name>.*.tmp`` file behind;
:func:`remove_stale_temps` clears those when a run resumes."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

TMP_SUFFIX = ".tmp"


def current_umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files an interrupted :func:`atomic_write_bytes` left in ``folder`` (not recursive);
    returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    gone = []
    for p in folder.iterdir():
        if p.is_file() and p.name.startswith(".") and p.name.endswith(TMP_SUFFIX):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8 (what ``Path.write_text`` does, but atomically)."""
    atomic_write_bytes(path, text.encode("utf-8"))
