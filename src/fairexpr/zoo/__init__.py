"""The model zoo: project-trained checkpoints shipped inside the package (package data), so ``pip install``
alone brings a model that answers a photo at once, offline.

Layout (everything under this folder is package data)::

    index.json               {"default": NAME, "models": {NAME: {"description", "recipe", "build", ...}}}
    <NAME>/model.safetensors weights (fp32 as trained, or fp16 with `build_zoo.py --storage fp16`; loaded into fp32)
    <NAME>/*.safetensors     more of them where the sidecar's ``extra_weights`` lists them (each file <= 10 MB)
    <NAME>/model.json        the ordinary fairexpr sidecar (model, classes, preprocessing, temperature,
                             metrics, config) plus a ``zoo`` section (test-set figures written by the build)
    <NAME>/MODEL_CARD.md     training data and protocol, the command that rebuilds it, per-class and balanced
                             accuracy on every test set, calibration, latency, size, licence situation

A *reference* to a packaged model is its name or an alias (``default``); :func:`resolve` turns a reference
into the model's folder, which every checkpoint consumer (``load_model``, ``TorchPredictor``, ``eval``,
``calibrate``, ``export``, ``serve``) accepts like a run directory. The entries are rebuilt by
``make zoo`` (``python -m fairexpr.zoo.build``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

__all__ = ["ZOO_DIR", "ZooError", "index", "is_reference", "list_pretrained", "pretrained_path", "resolve",
           "DEFAULT"]

ZOO_DIR = Path(__file__).resolve().parent
DEFAULT = "default"
_FILES = ("model.safetensors", "model.json")


class ZooError(CheckpointError):
    """Unknown packaged model name, or a packaged model whose files are missing."""


def index() -> dict[str, Any]:
    """``index.json``: the default model's name and one entry per packaged model."""
    p = ZOO_DIR / "index.json"
    try:
        idx = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ZooError(f"{p}: the model zoo index is unreadable ({e}); reinstall fairexpr") from None
    if not isinstance(idx.get("models"), dict) or idx.get("default") not in idx["models"]:
        raise ZooError(f"{p}: expected {{'default': NAME, 'models': {{NAME: ...}}}} with the default among the models")
    return idx


def _name(ref: str) -> str:
    idx = index()
    if ref == DEFAULT:
        return str(idx["default"])
    for name, entry in idx["models"].items():
        if ref == name or ref in entry.get("aliases", ()):
            return name
    raise ZooError(f"no packaged model named {ref!r}; known: {', '.join([DEFAULT, *idx['models']])} "
                   "(`fairexpr zoo` lists them)")


def _extra_files(d: Path) -> tuple[str, ...]:
    """The sidecar's ``extra_weights`` (weights split over several files, each under 10 MB), if it is readable."""
    try:
        extra = json.loads((d / "model.json").read_text()).get("extra_weights") or []
    except (OSError, json.JSONDecodeError):
        return ()
    return tuple(str(f) for f in extra) if isinstance(extra, list) else ()


def is_reference(ref: Any) -> bool:
    """True when ``ref`` names a packaged model (``default``, a name or an alias). Names never contain a path
    separator, so a run folder that happens to be called ``default`` is given as ``./default``."""
    if ref is None:
        return True
    if not isinstance(ref, str) or not ref or "/" in ref or "\\" in ref:
        return False
    try:
        _name(ref)
    except ZooError:
        return False
    return True


def pretrained_path(ref: str = DEFAULT) -> Path:
    """The folder of packaged model ``ref`` (a run-directory-like checkpoint); clear error when the name is
    unknown or its files are not installed."""
    name = _name(ref)
    d = ZOO_DIR / name
    missing = [f for f in _FILES + _extra_files(d) if not (d / f).is_file()]
    if missing:
        raise ZooError(f"packaged model {name!r} is not installed ({', '.join(missing)} missing under {d}); "
                       "rebuild it with `make zoo` or reinstall fairexpr")
    return d


def resolve(ref: str | Path | None) -> Path:
    """A ``--checkpoint`` value -> a checkpoint path: ``None`` and ``default`` give the default model, a packaged
    model's name or alias gives its folder, anything else is returned as a path (checked by its consumer)."""
    if ref is None or ref == DEFAULT:
        return pretrained_path(DEFAULT)  # a broken index is reported as such, not as a missing folder
    if isinstance(ref, str) and is_reference(ref):
        return pretrained_path(ref)
    return Path(ref)


def is_packaged(path: str | Path) -> bool:
    """True when ``path`` lies inside the installed zoo (a read-only location for ``calibrate`` and ``eval``)."""
    try:
        Path(path).resolve().relative_to(ZOO_DIR)
        return True
    except ValueError:
        return False


def list_pretrained() -> list[dict[str, Any]]:
    """One row per packaged model: name, aliases (``default`` included for the default), description, recipe,
    installed flag, file size, and the figures its sidecar's ``zoo`` section records."""
    idx = index()
    rows = []
    for name, entry in idx["models"].items():
        d = ZOO_DIR / name
        files = _FILES + _extra_files(d)
        installed = all((d / f).is_file() for f in files)
        side: dict[str, Any] = {}
        if installed:
            try:
                side = json.loads((d / "model.json").read_text())
            except json.JSONDecodeError as e:
                raise ZooError(f"{d / 'model.json'}: unreadable sidecar ({e}); reinstall fairexpr") from None
        aliases = ([DEFAULT] if name == idx["default"] else []) + list(entry.get("aliases", ()))
        rows.append({
            "name": name, "aliases": aliases, "description": entry.get("description", ""),
            "recipe": entry.get("recipe"), "installed": installed, "path": str(d),
            "size_mb": (round(sum((d / f).stat().st_size for f in files if f.endswith(".safetensors")) / 2**20, 2)
                        if installed else None),
            "members": [m.get("label") or m.get("name") for m in ((side.get("model") or {}).get("kwargs") or {}).get("members", [])],
            "architecture": (side.get("model") or {}).get("name"),
            "input_size": (side.get("preprocess") or {}).get("input_size"),
            "classes": side.get("classes"), "temperature": side.get("temperature"),
            "test": (side.get("zoo") or {}).get("test", {}),
            # what `--tta auto` (the default of predict / eval / serve) runs this model with
            "tta": ((side.get("inference") or {}).get("tta") or "none") if installed else None,
        })
    return rows
