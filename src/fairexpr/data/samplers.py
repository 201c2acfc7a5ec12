"""Seeded, resumable index samplers (``torch.utils.data.Sampler``): shuffle, class-balanced, square-root.

Every epoch's index list is a pure function of ``(seed, epoch)``, so a sampler resumes exactly from
``state_dict() = {"seed", "epoch", "position"}``: ``position`` counts indices already handed out in the
current epoch. With a ``DataLoader`` that prefetches, the engine should restore ``position`` from the
number of samples it actually consumed (``batches_done * batch_size``) rather than from the sampler's
own counter. After an epoch is exhausted the sampler moves to the next epoch; ``set_epoch`` overrides.

Class-frequency samplers draw a class, then a sample of that class; within a class samples are taken
from a reshuffled cycle (without replacement until the class is exhausted), which lowers variance
compared with i.i.d. draws. With class power ``q`` the class probability is
``P(k) = N_k^q / sum_j N_j^q``: ``q = 0`` class-balanced, ``q = 1/2`` square-root, ``q = 1`` instance.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from .base import DataError

__all__ = ["ShuffleSampler", "ClassPowerSampler", "ClassBalancedSampler", "SqrtSampler"]


class _Resumable(Sampler[int]):
    """Common machinery: per-epoch index list from ``(seed, epoch)``, position bookkeeping."""

    def __init__(self, num_samples: int, seed: int) -> None:
        if num_samples <= 0:
            raise DataError(f"sampler epoch length must be positive, got {num_samples}")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.epoch = 0
        self.position = 0

    def _epoch_indices(self, epoch: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(epoch)])

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        order = self._epoch_indices(self.epoch)
        while self.position < order.size:
            i = int(order[self.position])
            self.position += 1
            yield i
        self.epoch += 1
        self.position = 0

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning (like ``DistributedSampler.set_epoch``)."""
        self.epoch, self.position = int(epoch), 0

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"seed", "epoch", "position"} - set(state)
        if missing:
            raise DataError(f"sampler state is missing {sorted(missing)}")
        if not 0 <= int(state["position"]) <= self.num_samples:
            raise DataError(f"sampler state position {state['position']} outside [0, {self.num_samples}]")
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])


class ShuffleSampler(_Resumable):
    """A fresh permutation of ``range(n)`` every epoch (``RandomSampler`` without replacement).

    ``num_samples`` > n concatenates permutations; < n truncates one.
    """

    def __init__(self, n: int, seed: int = 0, num_samples: int | None = None) -> None:
        if n <= 0:
            raise DataError(f"ShuffleSampler needs a non-empty dataset, got n={n}")
        self.n = int(n)
        super().__init__(num_samples or self.n, seed)

    def _epoch_indices(self, epoch: int) -> np.ndarray:
        rng = self._rng(epoch)
        reps = -(-self.num_samples // self.n)
        return np.concatenate([rng.permutation(self.n) for _ in range(reps)])[: self.num_samples]


class ClassPowerSampler(_Resumable):
    """Class-frequency sampler with ``P(class k) = N_k^q / sum_j N_j^q`` (see module docstring).

    ``labels``: class index per sample (``-1`` = unlabelled, never drawn). ``num_samples`` = epoch
    length (default: number of labelled samples). ``images_per_class=B`` (balanced only, ``q = 0``)
    yields whole batches holding exactly B images of every present class (GReFEL's class-balanced
    batches); use ``batch_size = self.batch_size`` and the epoch length is rounded down to a multiple
    of it (at least one batch).

    ``groups`` (one integer id per sample: subject, video, face group) with ``images_per_group=N_pg``
    (needs ``images_per_class``, a multiple of N_pg) fills each class's B slots of a batch with B/N_pg
    groups of that class, N_pg images from each (GReFEL's "N_pg images per face group"): the groups of a
    class are visited in a reshuffled cycle, and within a group its images of that class in a reshuffled
    cycle (a group with fewer than N_pg images of the class repeats some of them).
    """

    def __init__(self, labels: Sequence[int] | np.ndarray, q: float, seed: int = 0, num_samples: int | None = None,
                 images_per_class: int | None = None, groups: Sequence[int] | np.ndarray | None = None,
                 images_per_group: int | None = None) -> None:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
        present = np.unique(y[y >= 0])
        if present.size == 0:
            raise DataError("class sampler needs at least one labelled sample (all labels are -1)")
        self.q = float(q)
        self.classes = present
        self.members = [np.flatnonzero(y == k) for k in present]
        counts = np.array([m.size for m in self.members], dtype=np.float64)
        w = counts ** self.q
        self.class_probs = w / w.sum()
        self.images_per_class = images_per_class
        n = int(num_samples or (y >= 0).sum())
        if images_per_class is not None:
            if self.q != 0.0:
                raise DataError("images_per_class batches are defined for the class-balanced sampler (q=0) only")
            if int(images_per_class) < 1:
                raise DataError(f"images_per_class must be >= 1, got {images_per_class}")
            self.batch_size = int(images_per_class) * present.size
            n = max(self.batch_size, n - n % self.batch_size)
        else:
            self.batch_size = None
        self.images_per_group = None
        if images_per_group is not None:
            if images_per_class is None:
                raise DataError("images_per_group needs images_per_class (groups fill each class's slots of a batch)")
            g, ipg = int(images_per_group), int(images_per_class)
            if g < 1 or ipg % g:
                raise DataError(f"images_per_class ({ipg}) must be a positive multiple of images_per_group ({images_per_group})")
            if groups is None:
                raise DataError("images_per_group needs one group id per sample (groups=...)")
            gr = np.asarray(groups, dtype=np.int64).reshape(-1)
            if gr.shape != y.shape:
                raise DataError(f"groups has {gr.size} ids for {y.size} samples")
            if (gr[y >= 0] < 0).any():
                raise DataError(f"{int((gr[y >= 0] < 0).sum())} labelled samples have no group id (-1); "
                                "images_per_group needs every labelled sample in a group")
            self.images_per_group = g
            # per present class: list of member arrays, one per group holding images of that class
            self.group_members = [[m[gr[m] == gid] for gid in np.unique(gr[m])] for m in self.members]
        super().__init__(n, seed)

    def _cycle(self, rng: np.random.Generator, members: np.ndarray, count: int) -> np.ndarray:
        reps = -(-count // members.size)
        return np.concatenate([rng.permutation(members) for _ in range(reps)])[:count]

    def _grouped(self, rng: np.random.Generator, group_members: list[np.ndarray], n_batches: int, B: int) -> np.ndarray:
        """``[n_batches, B]`` indices of one class: B / N_pg groups per batch, N_pg images from each."""
        g = int(self.images_per_group)  # type: ignore[arg-type]
        per_batch = B // g
        order = self._cycle(rng, np.arange(len(group_members)), per_batch * n_batches)
        pos = [0] * len(group_members)
        cycles: list[np.ndarray] = [rng.permutation(m) for m in group_members]
        out = np.empty(per_batch * n_batches * g, dtype=np.int64)
        for j, gi in enumerate(order):
            m = group_members[gi]
            take = []
            for _ in range(g):
                if pos[gi] == m.size:
                    cycles[gi], pos[gi] = rng.permutation(m), 0
                take.append(cycles[gi][pos[gi]])
                pos[gi] += 1
            out[j * g:(j + 1) * g] = take
        return out.reshape(n_batches, B)

    def _epoch_indices(self, epoch: int) -> np.ndarray:
        rng = self._rng(epoch)
        K = len(self.members)
        if self.images_per_class is not None:
            B = int(self.images_per_class)
            n_batches = self.num_samples // self.batch_size
            if self.images_per_group is not None:
                per_class = [self._grouped(rng, gm, n_batches, B) for gm in self.group_members]
            else:
                per_class = [self._cycle(rng, m, B * n_batches).reshape(n_batches, B) for m in self.members]
            batches = np.concatenate(per_class, axis=1)  # [n_batches, B*K]
            batches = rng.permuted(batches, axis=1)
            return batches.reshape(-1)
        cls = rng.choice(K, size=self.num_samples, p=self.class_probs)
        out = np.empty(self.num_samples, dtype=np.int64)
        for j in range(K):
            pos = np.flatnonzero(cls == j)
            if pos.size:
                out[pos] = self._cycle(rng, self.members[j], pos.size)
        return out


class ClassBalancedSampler(ClassPowerSampler):
    """Every present class equally likely (``q = 0``); optional ``images_per_class`` batches."""

    def __init__(self, labels: Sequence[int] | np.ndarray, seed: int = 0, num_samples: int | None = None,
                 images_per_class: int | None = None, groups: Sequence[int] | np.ndarray | None = None,
                 images_per_group: int | None = None) -> None:
        super().__init__(labels, 0.0, seed, num_samples, images_per_class, groups, images_per_group)


class SqrtSampler(ClassPowerSampler):
    """Square-root sampling: ``P(k) ∝ sqrt(N_k)`` (``q = 1/2``)."""

    def __init__(self, labels: Sequence[int] | np.ndarray, seed: int = 0, num_samples: int | None = None) -> None:
        super().__init__(labels, 0.5, seed, num_samples)
