"""Checkpoints: weights as safetensors + a JSON sidecar; written atomically; never unpickled.

The one checkpoint format, below the engine, evaluation and inference, which all read and write it through
this module (it needs only the model registry to rebuild a network).

A *run directory* (``fairexpr train --out DIR``) holds::

    model.safetensors   the deployable network's weights (best epoch by the selection metric)
    model.json          sidecar: model name/kwargs, classes, preprocessing, metrics, config, versions,
                        calibration temperature
    last.safetensors    full training state for --resume (all method tensors + optimizer tensors)
    last.json           its sidecar (epoch, step, RNG states, scheduler state, method extra state)
    metrics.csv         per-epoch log
    <name>.safetensors  + <name>.json: each companion network of the method (``Method.companion_networks``,
                        e.g. Meta-Face2Exp's ``base``), saved at the same best epoch as ``model``

A checkpoint's weights may be split over several files (a packaged model keeps each file under 10 MB): the
sidecar's ``extra_weights`` lists the files beside ``model.safetensors`` (plain names in the same folder) whose
tensors complete it; :func:`checkpoint_weights` reads them all, a key in two files being an error.

:func:`load_model` rebuilds the deployable network from a run directory (or a sidecar path).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import atomic_write_bytes, remove_stale_temps  # noqa: F401  (re-exported: the one atomic writer)
from .errors import CheckpointError

SIDECAR_VERSION = 1


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default).encode())


def atomic_save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, save(clean, metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist")
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: fairexpr checkpoints are .safetensors files; refusing to unpickle {path.suffix!r}")
    try:
        return load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None


def read_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"sidecar {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: sidecar is not valid JSON ({e})") from None


def versions() -> dict[str, str]:
    import platform

    import torchvision

    from . import __version__

    return {"fairexpr": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version()}


def save_model(run_dir: str | Path, model: nn.Module, sidecar: dict[str, Any], stem: str = "model") -> None:
    """Write ``<stem>.safetensors`` + ``<stem>.json`` (sidecar must contain ``model``, ``classes``,
    ``preprocess``)."""
    for key in ("model", "classes", "preprocess"):
        if key not in sidecar:
            raise CheckpointError(f"sidecar is missing required key {key!r}")
    run_dir = Path(run_dir)
    side = {"format": "fairexpr-checkpoint", "version": SIDECAR_VERSION, "versions": versions(), **sidecar}
    atomic_save_tensors(run_dir / f"{stem}.safetensors", model.state_dict())
    atomic_write_json(run_dir / f"{stem}.json", side)


def resolve_checkpoint(path: str | Path, stem: str = "model") -> tuple[Path, Path]:
    """Accept a run directory, a ``.json`` sidecar or a ``.safetensors`` file; return (weights, sidecar)."""
    p = Path(path)
    if p.is_dir():
        w, s = p / f"{stem}.safetensors", p / f"{stem}.json"
    elif p.suffix == ".json":
        w, s = p.with_suffix(".safetensors"), p
    elif p.suffix == ".safetensors":
        w, s = p, p.with_suffix(".json")
    else:
        if not p.exists():
            raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
        raise CheckpointError(f"{p}: expected a run directory, a .json sidecar or a .safetensors file")
    if not w.is_file():
        raise CheckpointError(f"checkpoint weights {str(w)!r} not found (expected next to the sidecar)")
    if not s.is_file():
        raise CheckpointError(f"checkpoint sidecar {str(s)!r} not found")
    return w, s


def weight_files(weights: str | Path, side: dict[str, Any]) -> list[Path]:
    """``weights`` and the sidecar's ``extra_weights`` files beside it (each a plain ``.safetensors`` name)."""
    w = Path(weights)
    extra = side.get("extra_weights") or []
    if not isinstance(extra, list):
        raise CheckpointError(f"{w.with_suffix('.json')}: extra_weights must be a list of file names, got {extra!r}")
    out = [w]
    for name in extra:
        if (not isinstance(name, str) or not name.endswith(".safetensors") or "/" in name or "\\" in name
                or name.startswith(".") or name == w.name):
            raise CheckpointError(f"{w.with_suffix('.json')}: extra_weights entry {name!r} is not a .safetensors file "
                                  "name in the checkpoint's folder")
        f = w.parent / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint weights {str(f)!r} (listed in extra_weights) not found")
        out.append(f)
    return out


def checkpoint_weights(weights: str | Path, side: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint: ``weights`` merged with its ``extra_weights`` files."""
    files = weight_files(weights, side)
    state = load_tensors(files[0])
    for f in files[1:]:
        part = load_tensors(f)
        twice = sorted(set(part) & set(state))
        if twice:
            raise CheckpointError(f"{f}: tensor {twice[0]!r} is also in {', '.join(x.name for x in files[:files.index(f)])}")
        state.update(part)
    return state


def refuse_ensemble(side: dict[str, Any], ref: Any, option: str) -> None:
    """An ensemble (several networks, see :mod:`fairexpr.models.ensemble`) cannot start a training run."""
    from .errors import ConfigError

    m = side.get("model") or {}
    if m.get("name") == "ensemble":
        names = ", ".join(f"{s.get('label') or s.get('name')} ({s.get('source', '?')})"
                          for s in (m.get("kwargs") or {}).get("members", []))
        raise ConfigError(f"{option}: {ref} is an ensemble of {len((m.get('kwargs') or {}).get('members', []))} networks "
                          f"({names}); training starts from one network: give one of its members, e.g. the packaged "
                          "fer2013-mobilenetv2-ldam (`fairexpr zoo` lists them), or a run folder")


def read_source(ref: str | Path, option: str) -> tuple[Path, dict[str, Any]]:
    """(weights file, sidecar) of a trained model named by a run directory / checkpoint file, or by a packaged model's
    name or ``default`` — what ``model.init`` / ``--init`` start from. Any problem is one ConfigError naming ``option``."""
    from . import zoo
    from .errors import ConfigError

    try:
        path = zoo.pretrained_path(ref) if isinstance(ref, str) and zoo.is_reference(ref) else ref
        w, s = resolve_checkpoint(path)
        side = read_json(s)
        if side.get("format") != "fairexpr-checkpoint":
            raise CheckpointError(f"{s}: not a fairexpr checkpoint sidecar (missing format marker)")
    except (CheckpointError, ValueError) as e:
        raise ConfigError(f"{option}: {e}") from None
    refuse_ensemble(side, ref, option)  # named as the user gave it ("default", a name, a path)
    return w, side


def load_model(path: str | Path, *, stem: str = "model", map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the deployable model from a checkpoint; returns ``(model.eval(), sidecar)``."""
    from .models import create_model

    w, s = resolve_checkpoint(path, stem)
    side = read_json(s)
    if side.get("format") != "fairexpr-checkpoint":
        raise CheckpointError(f"{s}: not a fairexpr checkpoint sidecar (missing format marker)")
    m = side["model"]
    model = create_model(m["name"], num_classes=int(m["num_classes"]), pretrained=None, **m.get("kwargs", {}))
    state = checkpoint_weights(w, side)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{w}: weights do not match model {m['name']!r}: missing {list(missing)[:5]}, "
                              f"unexpected {list(unexpected)[:5]}")
    return model.to(map_location).eval(), side


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray, torch.Tensor)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
