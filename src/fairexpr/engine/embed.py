"""Backbone embeddings of a dataset split, computed once and cached: the input of the head-level protocol
(``docs/benchmarks.md``), where a loss or a head is trained on fixed features for many seeds in minutes.

An embeddings file is an ``.npz`` with ``features`` [N, D] float32 (the model's ``forward_features``, i.e. what its
head sees), ``labels`` [N] int64 (indices into ``classes``), optionally ``soft_labels`` [N, K] (vote
distributions, e.g. FER+) and ``logits`` [N, K] (the checkpoint's own head, absent for a bare backbone), and
``meta`` (JSON: format tag, model, dataset, split, preprocessing, TTA, exclusions, date). Images that are not
embedded (classes outside ``classes``, rows without a label, protocol exclusions, skipped files) are counted
by reason in ``meta["exclusions"]``, as ``fairexpr eval`` does.
"""
from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import checkpoint as ck

FORMAT = "fairexpr.embeddings/1"


class EmbeddingsError(ValueError):
    """An embeddings file that cannot be used (missing, not ours, inconsistent arrays)."""


@dataclass
class Embeddings:
    features: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    soft_labels: np.ndarray | None = None
    logits: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        f, y = np.asarray(self.features), np.asarray(self.labels)
        where = self.meta.get("path", "embeddings")
        if f.ndim != 2:
            raise EmbeddingsError(f"{where}: features must be [N, D], got shape {f.shape}")
        if y.shape != (f.shape[0],):
            raise EmbeddingsError(f"{where}: labels must be [{f.shape[0]}], got shape {y.shape}")
        k = len(self.classes)
        if y.size and (y.min() < 0 or y.max() >= k):
            raise EmbeddingsError(f"{where}: labels must be class indices in [0, {k}), got {int(y.min())}..{int(y.max())}")
        for name in ("soft_labels", "logits"):
            a = getattr(self, name)
            if a is not None and np.asarray(a).shape != (f.shape[0], k):
                raise EmbeddingsError(f"{where}: {name} must be [{f.shape[0]}, {k}], got shape {np.asarray(a).shape}")
        self.features, self.labels = f.astype(np.float32, copy=False), y.astype(np.int64, copy=False)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.classes))


def save_embeddings(emb: Embeddings, path: str | Path) -> Path:
    """Write ``emb`` atomically (with the user's umask) as an ``.npz``."""
    path = Path(path)
    arrays: dict[str, Any] = {"features": emb.features, "labels": emb.labels}
    for name in ("soft_labels", "logits"):
        if getattr(emb, name) is not None:
            arrays[name] = np.asarray(getattr(emb, name), np.float32)
    meta = {k: v for k, v in emb.meta.items() if k != "path"} | {"format": FORMAT, "classes": list(emb.classes)}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    ck.atomic_write_bytes(path, buf.getvalue())
    return path


def load_embeddings(path: str | Path) -> Embeddings:
    """Read a file written by :func:`save_embeddings`; one clear :class:`EmbeddingsError` for anything else."""
    path = Path(path)
    if not path.is_file():
        raise EmbeddingsError(f"{path}: no such embeddings file (make one with `fairexpr embed`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - zip/format errors of every kind
        raise EmbeddingsError(f"{path}: not an embeddings .npz ({type(e).__name__}: {e})") from None
    missing = [k for k in ("features", "labels", "meta") if k not in arrays]
    if missing:
        raise EmbeddingsError(f"{path}: not a fairexpr embeddings file (missing {', '.join(missing)})")
    try:
        meta = json.loads(arrays["meta"].tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise EmbeddingsError(f"{path}: meta is not JSON") from None
    if meta.get("format") != FORMAT:
        raise EmbeddingsError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return Embeddings(arrays["features"], arrays["labels"], tuple(meta["classes"]), arrays.get("soft_labels"),
                      arrays.get("logits"), meta | {"path": str(path)})


def _forward(model: torch.nn.Module, head: bool, sp: Any, pre: dict[str, Any], batch_size: int, tta: str,
             progress: bool) -> tuple[np.ndarray, np.ndarray | None]:
    from tqdm.auto import tqdm

    from ..data.augment import normalize, to_float
    from ..evaluation.tta import mean_views, tta_views

    feats, logits = [], []
    model.eval()
    with torch.inference_mode():
        for s in tqdm(range(0, len(sp), batch_size), desc="embedding", unit="batch", disable=not progress, leave=False,
                      mininterval=1.0):
            x = normalize(to_float(sp.images[s:s + batch_size]), pre["mean"], pre["std"])
            fs = [model.forward_features(v) for v, _ in tta_views(x, tta)]
            feats.append(mean_views(fs).float())
            if head:
                logits.append(mean_views([model.forward_head(f) for f in fs]).float())
    if not feats:
        raise EmbeddingsError("nothing to embed: the split is empty after exclusions")
    return torch.cat(feats).numpy(), (torch.cat(logits).numpy() if head else None)


def embed(model: torch.nn.Module, pre: dict[str, Any], spec: str, split: str | None, *, classes: tuple[str, ...],
          head: bool, options: dict[str, Any] | None = None, on_bad_file: str = "error", progress: bool = True,
          batch_size: int = 256, tta: str = "none", source: dict[str, Any] | None = None) -> Embeddings:
    """Embed ``spec`` [``split``] with ``model`` (``pre`` = input_size, in_chans, mean, std)."""
    from ..errors import ConfigError
    from ..evaluation.tta import check_tta
    from .data import _remap, load_split
    from .evaluate import exclusion_summary

    try:
        tta = check_tta(tta, "tta")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    data_cfg = {"image_size": int(pre["input_size"][0]), "channels": int(pre["in_chans"]), "on_bad_file": on_bad_file,
                "cache_dir": None}
    sp = load_split("embed", spec, split, options or {}, data_cfg, progress)
    unlabelled = int((sp.labels < 0).sum())
    sp = _remap(sp, classes)
    if unlabelled:
        sp = sp.subset(torch.nonzero(sp.labels >= 0).flatten())
    f, z = _forward(model, head, sp, pre, batch_size, tta, progress)
    meta = {"source": source or {}, "dataset": spec, "split": split, "options": options or {}, "tta": tta,
            "preprocess": {k: pre[k] for k in ("input_size", "in_chans", "mean", "std")}, "n": int(len(sp)),
            "dim": int(f.shape[1]), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "exclusions": exclusion_summary(sp.info.get("excluded", []), sp.info.get("dropped_absent_classes", {}),
                                            unlabelled)}
    return Embeddings(f, sp.labels.numpy(), classes, None if sp.soft_labels is None else sp.soft_labels.numpy(), z, meta)


def embed_checkpoint(checkpoint: str | Path, spec: str, split: str | None = None, **kw: Any) -> Embeddings:
    """Embed with a trained model (run folder or packaged name): its preprocessing, its classes, its head's logits."""
    model, side = ck.load_model(checkpoint)
    model = model.float()
    src = {"kind": "checkpoint", "checkpoint": str(checkpoint), "model": side.get("model", {}),
           "temperature": side.get("temperature")}
    return embed(model, side["preprocess"], spec, split, classes=tuple(side["classes"]), head=True, source=src, **kw)


def embed_backbone(name: str, spec: str, split: str | None = None, *, pretrained: str | None, image_size: int,
                   channels: int, model_kwargs: dict[str, Any] | None = None, classes: tuple[str, ...] | None = None,
                   **kw: Any) -> Embeddings:
    """Embed with a registry backbone as pretrained (``pretrained=`` as in a recipe's ``model.pretrained``), no
    training: the features a linear probe or a head-level benchmark starts from. No logits (its head is untrained)."""
    from ..labels import CANONICAL7
    from ..models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=len(classes or CANONICAL7), pretrained=pretrained, in_chans=channels,
                         **(model_kwargs or {}))
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    pre = {"input_size": [image_size, image_size], "in_chans": channels, "mean": list(cfg.get("mean", [0.5])),
           "std": list(cfg.get("std", [0.5]))}
    src = {"kind": "backbone", "model": {"name": name, "pretrained": pretrained, "kwargs": model_kwargs or {}}}
    return embed(model, pre, spec, split, classes=tuple(classes or CANONICAL7), head=False, source=src, **kw)
