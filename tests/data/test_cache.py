"""materialize(): decoding, resizing, channel replication, disk cache hits/invalidation, bad files."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from fairexpr.data import DataError, FERDataset
from fairexpr.data.cache import ArrayData, cache_key, materialize

from .conftest import write_image


@pytest.fixture
def tree(tmp_path):
    write_image(tmp_path / "data/happy/a.png", size=8, value=200)
    write_image(tmp_path / "data/happy/b.jpg", size=16, color=True)
    write_image(tmp_path / "data/sad/c.png", size=8, value=10)
    return tmp_path / "data"


def test_decode_resize_and_channels(tree, tmp_path):
    ds = FERDataset.from_spec(f"folder:{tree}")
    a = materialize(ds, 12, 1, cache_dir=tmp_path / "c", progress=False)
    assert isinstance(a, ArrayData) and a.images.dtype == torch.uint8 and a.images.shape == (3, 1, 12, 12)
    i = [s.path.endswith("a.png") for s in a.samples].index(True)
    assert (a.images[i] == 200).all() and a.labels.dtype == torch.int64 and a.soft_labels is None
    assert a.labels.tolist() == ds.labels.tolist()
    a3 = materialize(ds, 12, 3, cache_dir=tmp_path / "c", progress=False)
    assert a3.images.shape == (3, 3, 12, 12)
    assert torch.equal(a3.images[i, 0], a3.images[i, 2])  # grayscale replicated
    assert a[i]["image"].shape == (1, 12, 12) and len(a.subset([0, 2])) == 2


def test_cache_hit_and_invalidation(tree, tmp_path, monkeypatch):
    ds = FERDataset.from_spec(f"folder:{tree}")
    cdir = tmp_path / "c"
    a = materialize(ds, 8, 1, cache_dir=cdir, progress=False)
    files = list(cdir.glob("*.npz"))
    assert len(files) == 1 and not list(cdir.glob("*.tmp"))
    import fairexpr.data.cache as cache

    def boom(*a, **k):
        raise AssertionError("decoded again despite cache")

    monkeypatch.setattr(cache, "_decode", boom)
    b = materialize(ds, 8, 1, cache_dir=cdir, progress=False)
    assert torch.equal(a.images, b.images)
    monkeypatch.undo()
    # change a file's content: new key, re-decoded
    p = tree / "sad/c.png"
    Image.fromarray(np.full((8, 8), 99, np.uint8)).save(p)
    os.utime(p, ns=(time.time_ns(), time.time_ns() + 10**9))
    c = materialize(ds, 8, 1, cache_dir=cdir, progress=False)
    j = [s.path.endswith("c.png") for s in c.samples].index(True)
    assert (c.images[j] == 99).all() and len(list(cdir.glob("*.npz"))) == 2
    assert cache_key(ds.samples, 8, 1) != cache_key(ds.samples, 8, 3)


def test_env_cache_dir(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("FAIREXPR_CACHE", str(tmp_path / "envcache"))
    materialize(FERDataset.from_spec(f"folder:{tree}"), 8, 1, progress=False)
    assert len(list((tmp_path / "envcache").glob("*.npz"))) == 1


def test_corrupt_file_error_and_skip(tree, tmp_path):
    (tree / "sad/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    ds = FERDataset.from_spec(f"folder:{tree}")
    with pytest.raises(DataError, match="broken.png: cannot decode"):
        materialize(ds, 8, 1, cache_dir=tmp_path / "c", progress=False)
    a = materialize(ds, 8, 1, cache_dir=tmp_path / "c", progress=False, on_bad_file="skip")  # from cache
    assert len(a) == 3 and len(a.skipped) == 1 and a.skipped.items[0][0].endswith("broken.png")
    assert not any(s.path.endswith("broken.png") for s in a.samples)


def test_inline_pixels_and_soft_labels(tmp_path):
    from fairexpr.data import Sample
    from fairexpr.labels import CANONICAL7

    px = np.arange(48 * 48, dtype=np.uint8).reshape(48, 48)
    s = [Sample("x.csv#L2", 1, "train", soft_label=(0, 1, 0, 0, 0, 0, 0), pixels=px),
         Sample("x.csv#L3", 2, "train", soft_label=(0, 0, .5, .5, 0, 0, 0), pixels=px[::-1].copy())]
    a = materialize(FERDataset(s, CANONICAL7), 48, 1, cache_dir=tmp_path, progress=False)
    assert np.array_equal(a.images[0, 0].numpy(), px) and a.soft_labels.shape == (2, 7)
    assert cache_key(s, 48, 1) != cache_key(s[::-1], 48, 1)


def test_bad_arguments(tree):
    ds = FERDataset.from_spec(f"folder:{tree}")
    with pytest.raises(DataError, match="channels"):
        materialize(ds, 8, 2, cache_dir=False)
