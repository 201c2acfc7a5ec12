"""Turns the config's ``data`` section into in-memory tensors for every role the engine needs
(train, val, test, target, target_eval, unlabelled) and iterates batches from them."""
from __future__ import annotations

import os

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import ConfigError
from ..data.base import DataError, FERDataset
from ..labels import label_space


@dataclass
class Split:
    """A decoded split: uint8 images [N,C,H,W], labels [N] (-1 = unlabelled), optional soft labels, and
    ``groups``: per-image integer ids for each grouping the adapter provides (``subject``, ``sequence``;
    -1 = none), used by the class-balanced sampler's ``images_per_group``."""

    name: str
    spec: str
    split: str | None
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    soft_labels: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    #: float32 [N, 5, 2] five-point landmarks (fractions of width/height; ``fairexpr.data.landmarks``) or None
    landmarks: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, idx: np.ndarray | torch.Tensor, name: str | None = None) -> "Split":
        idx_t = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        idx_np = idx_t.numpy()
        return Split(name or self.name, self.spec, self.split, self.images[idx_t], self.labels[idx_t], self.classes,
                     None if self.soft_labels is None else self.soft_labels[idx_t], dict(self.info),
                     {k: v[idx_np] for k, v in self.groups.items()},
                     None if self.landmarks is None else self.landmarks[idx_t])

    def class_counts(self) -> list[int]:
        lab = self.labels[self.labels >= 0]
        return torch.bincount(lab, minlength=len(self.classes)).tolist()


def _remap(split: Split, classes: tuple[str, ...]) -> Split:
    """Map a split's labels into another canonical label space (e.g. 8-class CK+ into 7 classes).
    Samples whose class is absent from ``classes`` are dropped and counted in ``info``."""
    if split.classes == classes:
        return split
    # new index per old class, -2 = absent from ``classes``; the trailing -1 maps unlabelled (-1) to itself
    lut = torch.tensor([classes.index(c) if c in classes else -2 for c in split.classes] + [-1])
    new = lut[split.labels.clamp(min=-1)]
    keep = new != -2
    dropped = {c: int(((split.labels == i) & ~keep).sum()) for i, c in enumerate(split.classes) if c not in classes}
    out = split.subset(torch.nonzero(keep).flatten())
    out.labels = new[keep]
    if out.soft_labels is not None:
        sl = torch.zeros(len(out), len(classes))
        for j, c in enumerate(classes):
            if c in split.classes:
                sl[:, j] = out.soft_labels[:, split.classes.index(c)]
        out.soft_labels = sl / sl.sum(1, keepdim=True).clamp(min=1e-12)
    out.classes = classes
    out.info["dropped_absent_classes"] = {k: v for k, v in dropped.items() if v}
    return out


def load_split(name: str, spec: str, split: str | None, options: dict[str, Any], data_cfg: dict[str, Any],
               progress: bool = True) -> Split:
    from ..data.cache import materialize
    from ..data.landmarks import attach_options, landmarks_for, read_landmark_file, split_root
    from ..data.splits import resolve_split, select

    options, lm_file = attach_options(options)
    try:
        # split strings compose (``train/frac0.05``, ``fold3of10/rest``; fairexpr.data.splits), seed 0 for the modifiers
        ss = resolve_split(split)
        ds = FERDataset.from_spec(spec, ss.base, on_bad_file=data_cfg["on_bad_file"], **(options or {}))
        if ss.modifiers:
            ds = ds.subset(select(ds.samples, ss, 0).tolist())
    except TypeError as e:
        raise ConfigError(f"data.{name}_options: bad adapter option for {spec!r}: {e}") from None
    if len(ds) == 0:
        raise DataError(f"data.{name}: {spec!r} split {split!r} contains no images")
    arr = materialize(ds, size=int(data_cfg["image_size"]), channels=int(data_cfg["channels"]),
                      cache_dir=data_cfg.get("cache_dir"), progress=progress, on_bad_file=data_cfg["on_bad_file"])
    # arr.skipped = the adapter's exclusions/skips (copied from ds.skipped) + files that failed to decode
    excluded = list((getattr(arr, "skipped", None) or ds.skipped).items)
    skipped = len(excluded)
    lms = None
    if lm_file is not None:
        if not isinstance(lm_file, (str, os.PathLike)):
            raise ConfigError(f"data.{name}_options.landmarks: must be the path of a landmark CSV, got {lm_file!r}")
        table = read_landmark_file(os.path.expandvars(str(lm_file)))
        lms = torch.from_numpy(landmarks_for([s.path for s in arr.samples], table, split_root(spec),
                                             f"data.{name} ({spec})"))
    return Split(name, spec, split, arr.images, arr.labels.long(), tuple(ds.classes), arr.soft_labels,
                 {"skipped": skipped, "excluded": excluded, "n": int(arr.images.shape[0]),
                  **({"landmarks": str(lm_file)} if lm_file else {})},
                 group_ids(arr.samples), lms)


#: sample attributes that define image groups (GReFEL's face groups: subject, video sequence)
GROUP_KEYS = ("subject", "sequence")


def group_ids(samples: Any) -> dict[str, np.ndarray]:
    """Integer ids (first-seen order, -1 = missing) of each :data:`GROUP_KEYS` attribute that at least one
    sample has; groupings no sample has are left out."""
    out: dict[str, np.ndarray] = {}
    for key in GROUP_KEYS:
        vals = [getattr(s, key, None) for s in samples]
        if all(v is None for v in vals):
            continue
        index: dict[Any, int] = {}
        out[key] = np.array([-1 if v is None else index.setdefault(v, len(index)) for v in vals], dtype=np.int64)
    return out


def build_splits(cfg: dict[str, Any], progress: bool = True) -> dict[str, Split]:
    """Load every data role named in the config, aligned to the training label space."""
    from ..data import splits as S

    d = cfg["data"]
    out: dict[str, Split] = {}
    train = load_split("train", d["train"], d["train_split"], d["train_options"], d, progress)
    classes = train.classes
    val_spec = d.get("val")
    if isinstance(val_spec, str) and val_spec.startswith("holdout:"):
        try:
            frac = float(val_spec.split(":", 1)[1])
        except ValueError:
            raise ConfigError(f"data.val: {val_spec!r} must be holdout:<fraction>, e.g. holdout:0.1") from None
        if not 0 < frac < 1:
            raise ConfigError(f"data.val: holdout fraction must be in (0, 1), got {frac}")
        tr_idx, va_idx = S.stratified_holdout(train.labels.numpy(), frac, seed=int(cfg["seed"]))
        out["val"] = train.subset(va_idx, "val")
        out["val"].split = f"{d['train_split'] or 'all'} (holdout {frac:g})"
        out["val"].info["holdout_of"] = d["train"]
        train = train.subset(tr_idx, "train")
    elif val_spec:
        out["val"] = _remap(load_split("val", val_spec, d["val_split"], d["val_options"], d, progress), classes)
    frac = float(d.get("label_fraction", 1.0))
    if frac < 1.0:
        idx = S.label_fraction(train.labels.numpy(), frac, seed=int(cfg["seed"]))
        train = train.subset(idx, "train")
        train.info["label_fraction"] = frac
    if float(d.get("label_noise", 0.0)) > 0:
        noisy, flipped = S.inject_label_noise(train.labels.numpy(), float(d["label_noise"]), kind=d["label_noise_kind"],
                                              seed=int(cfg["seed"]), num_classes=len(classes))
        train.labels = torch.as_tensor(noisy, dtype=torch.long)
        train.info["label_noise"] = {"rate": float(d["label_noise"]), "kind": d["label_noise_kind"],
                                     "flipped": int(np.asarray(flipped).sum())}
    if d["label_mode"] == "soft" and train.soft_labels is None:
        raise ConfigError(f"data.label_mode=soft needs a dataset with vote distributions (e.g. ferplus with "
                          f"train_options.protocol=probability); {d['train']!r} has none")
    out["train"] = train
    for role in ("test", "target", "target_eval", "unlabelled"):
        spec = d.get(role)
        if not spec:
            continue
        s = load_split(role, spec, d.get(f"{role}_split"), d.get(f"{role}_options", {}), d, progress)
        if role in ("target", "unlabelled"):
            s.labels = torch.full_like(s.labels, -1)  # labels of adaptation/unlabelled data are never used
            s.soft_labels = None
            s.classes = classes
        else:
            s = _remap(s, classes)
        out[role] = s
    return out


def epoch_indices(n: int, sampler_cfg: dict[str, Any], labels: np.ndarray, seed: int, epoch: int,
                  groups: dict[str, np.ndarray] | None = None, spec: str = "data.train") -> np.ndarray:
    """Indices of one epoch (length n), deterministic in (seed, epoch) so resume at an epoch boundary
    reproduces the uninterrupted run. ``sampler.kwargs.images_per_group`` takes the ids of
    ``sampler.kwargs.group_by`` (default ``subject``) from ``groups``."""
    from ..data import samplers

    name = sampler_cfg.get("name", "random")
    kw = dict(sampler_cfg.get("kwargs") or {})
    if name == "random":
        rng = np.random.default_rng([seed, epoch, 17])
        return rng.permutation(n)
    if "images_per_group" in kw or "group_by" in kw:
        key = kw.pop("group_by", "subject")
        if name != "class_balanced":
            raise ConfigError("sampler.kwargs.images_per_group: needs sampler.name=class_balanced")
        if "images_per_group" not in kw:
            raise ConfigError(f"sampler.kwargs.group_by={key!r} has no effect without sampler.kwargs.images_per_group "
                              "(and images_per_class)")
        if key not in (groups or {}):
            have = ", ".join(sorted(groups or {})) or "none"
            raise ConfigError(f"sampler.kwargs.group_by={key!r}: the training data {spec!r} has no per-image {key} "
                              f"ids (groupings it has: {have}; e.g. ckplus has subject and sequence)")
        kw["groups"] = groups[key]  # type: ignore[index]
    cls = {"class_balanced": samplers.ClassBalancedSampler, "sqrt": samplers.SqrtSampler}[name]
    try:
        s = cls(labels, seed=seed, **kw)
    except (TypeError, DataError) as e:  # unknown kwarg, or values the sampler rejects
        raise ConfigError(f"sampler.kwargs: {e}") from None
    s.set_epoch(epoch)
    return np.fromiter(iter(s), dtype=np.int64)


def cycle_indices(n: int, seed: int, stream: int) -> Iterator[np.ndarray]:
    """Endless shuffled passes over n items (for target/unlabelled streams)."""
    k = 0
    while True:
        yield np.random.default_rng([seed, stream, k]).permutation(n)
        k += 1


def label_space_for(classes: tuple[str, ...]) -> tuple[str, ...]:
    return label_space(len(classes))
