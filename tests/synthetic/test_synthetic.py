"""The procedural face generator: reproducibility, count profiles, domains, expression cues, learnability,
the ``synthetic:`` adapter and ``write_folder``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fairexpr.data import FERDataset, scan
from fairexpr.data.base import DataError
from fairexpr.data.synthetic import (DOMAINS, PROFILES, DomainStyle, generate, profile_counts, with_overrides,
                                     write_folder)
from fairexpr.labels import CANONICAL7, CANONICAL8


# ---- generate ---------------------------------------------------------------------------------------------------

def test_shapes_dtypes_and_labels():
    x, y = generate([2, 1, 0, 3, 1, 1, 2], size=24, seed=3)
    assert x.shape == (10, 24, 24) and x.dtype == np.uint8
    assert y.dtype == np.int64 and np.bincount(y, minlength=7).tolist() == [2, 1, 0, 3, 1, 1, 2]
    x3, y3 = generate({"happy": 2, "contempt": 2}, size=20, channels=3, classes=CANONICAL8)
    assert x3.shape == (4, 20, 20, 3)
    assert sorted(y3.tolist()) == [3, 3, 7, 7]
    # colour images are not grey: channels differ (skin tint)
    assert np.abs(x3[..., 0].astype(int) - x3[..., 2].astype(int)).mean() > 3


def test_reproducible_and_seed_sensitive():
    a = generate([3] * 7, size=24, seed=11)
    b = generate([3] * 7, size=24, seed=11)
    c = generate([3] * 7, size=24, seed=12)
    d = generate([3] * 7, size=24, seed=11, split="test")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], d[0])


def test_images_of_a_class_do_not_depend_on_other_counts():
    x1, y1 = generate([4, 0, 0, 0, 0, 0, 0], size=24, seed=5, shuffle=False)
    x2, y2 = generate([4, 9, 0, 2, 0, 0, 0], size=24, seed=5, shuffle=False)
    assert np.array_equal(x1, x2[y2 == 0])


def test_no_exact_duplicates_and_not_blank():
    from fairexpr.audit import pixel_hash

    x, _ = generate([20] * 7, size=32, seed=0, domain="lab")
    assert len({pixel_hash(im) for im in x}) == len(x)
    assert min(float(im.std()) for im in x) > 5.0


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(DataError, match="channels"):
        generate([1] * 7, channels=2)
    with pytest.raises(DataError, match="size"):
        generate([1] * 7, size=8)
    with pytest.raises(DataError, match="unknown domain"):
        generate([1] * 7, domain="mars")
    with pytest.raises(Exception, match="unknown expression class"):
        generate([1], classes=("boredom",))
    with pytest.raises(DataError, match="high < low"):
        DomainStyle(name="x", skin=(0.9, 0.1))


# ---- count profiles -------------------------------------------------------------------------------------------------

def test_profile_counts_reference_values():
    assert profile_counts("fer2013").tolist() == [3995, 436, 4097, 7215, 4830, 3171, 4965]
    assert profile_counts("fer2013").sum() == 28709
    # RAF-DB labels 1-7 = surprise, fear, disgust, happiness, sadness, anger, neutral; here in canonical order
    assert profile_counts("rafdb").tolist() == [705, 717, 281, 4772, 1982, 1290, 2524]
    assert profile_counts("rafdb").sum() == 12271
    assert profile_counts("fer2013", classes=CANONICAL8).tolist()[-1] == 0  # no contempt in FER2013
    assert profile_counts("balanced", classes=CANONICAL8, total=16).tolist() == [2] * 8


def test_profile_counts_largest_remainder_hand_computed():
    # weights 1:1:2, total 5 -> raw 1.25, 1.25, 2.5 -> floor 1, 1, 2; one left goes to the largest fraction (.5)
    assert profile_counts([1, 1, 2], classes=("anger", "disgust", "fear"), total=5).tolist() == [1, 1, 3]
    # total 7 -> raw 1.75, 1.75, 3.5 -> floor 1,1,3 (5); two left: fractions .75, .75, .5 -> first two
    assert profile_counts([1, 1, 2], classes=("anger", "disgust", "fear"), total=7).tolist() == [2, 2, 3]
    # FER2013 at total=1000: exact sum, disgust keeps >= 1, proportions kept within rounding
    c = profile_counts("fer2013", total=1000)
    assert c.sum() == 1000 and c[1] >= 1
    ref = np.array([PROFILES["fer2013"][k] for k in CANONICAL7])
    assert np.abs(c - ref / ref.sum() * 1000).max() < 1.0
    # scale: rounded, present classes keep at least one
    assert profile_counts("fer2013", scale=0.001).tolist() == [4, 1, 4, 7, 5, 3, 5]


def test_profile_counts_errors():
    with pytest.raises(DataError, match="unknown count profile"):
        profile_counts("affectnet-ish")
    with pytest.raises(DataError, match="7"):
        profile_counts([1, 2, 3])
    with pytest.raises(DataError, match=">= 0"):
        profile_counts([1, -1, 1, 1, 1, 1, 1])
    with pytest.raises(DataError, match="either"):
        profile_counts("fer2013", total=10, scale=0.1)
    with pytest.raises(DataError, match="too small"):
        profile_counts("fer2013", total=3)
    with pytest.raises(DataError, match="not in classes"):
        profile_counts({"contempt": 3})


# ---- domains and expression cues ----------------------------------------------------------------------------------

def test_domain_gap_lab_vs_wild():
    lab, _ = generate([15] * 7, size=32, seed=0, domain="lab")
    wild, _ = generate([15] * 7, size=32, seed=0, domain="wild")

    def noise(x):  # mean absolute difference between horizontal neighbours in flat background corners
        x = x.astype(np.float32)
        return np.abs(np.diff(x[:, :4, :4], axis=2)).mean()

    assert lab.mean() > wild.mean() + 15        # wild is darker
    assert noise(wild) > 2 * noise(lab)         # and noisier
    assert with_overrides("lab", noise_std=(0.1, 0.1)).noise_std == (0.1, 0.1)
    assert set(DOMAINS) >= {"default", "lab", "wild"}


def test_expression_cues_in_expected_regions():
    """Surprise opens the mouth: its mouth region is darker than neutral's (lab domain, 40 faces each)."""
    k = 40
    x, y = generate({"neutral": k, "surprise": k}, size=48, seed=1, domain="lab",
                    classes=("neutral", "surprise"), shuffle=False)
    mouth = x[:, 30:40, 18:30].astype(np.float32).min(axis=(1, 2))  # darkest pixel of the mouth area
    assert mouth[y == 1].mean() < mouth[y == 0].mean() - 15
    # and the difference of the class means is largest in the lower face (mouth), not at the border
    diff = np.abs(x[y == 1].astype(np.float32).mean(0) - x[y == 0].astype(np.float32).mean(0))
    r, c = np.unravel_index(diff.argmax(), diff.shape)
    assert 26 <= r <= 42 and 14 <= c <= 34, (r, c)


def test_learnable_but_not_trivial():
    """A tiny CNN trained for 8 epochs on 980 images (32 px) is far above chance (1/7) yet not perfect."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is fastest on a shared CPU
    try:
        torch.manual_seed(0)
        xtr, ytr = generate([140] * 7, size=32, seed=0, split="train")
        xte, yte = generate([40] * 7, size=32, seed=0, split="test")

        def prep(a):
            t = torch.tensor(a, dtype=torch.float32)[:, None] / 255.0
            return (t - t.mean((2, 3), keepdim=True)) / (t.std((2, 3), keepdim=True) + 1e-3)

        xtr, xte, ytr, yte = prep(xtr), prep(xte), torch.tensor(ytr), torch.tensor(yte)

        def block(i, o):
            return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]

        model = nn.Sequential(*block(1, 16), *block(16, 32), *block(32, 32), nn.Flatten(), nn.Linear(32 * 4 * 4, 7))
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(8):
            model.train()
            perm = torch.randperm(len(xtr), generator=g)
            for i in range(0, len(xtr), 64):
                idx = perm[i:i + 64]
                loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            acc = (model.eval()(xte).argmax(1) == yte).float().mean().item()
    finally:
        torch.set_num_threads(threads)
    assert acc > 2 / 7, f"accuracy {acc:.3f} is not clearly above chance (1/7)"
    assert acc < 0.99, f"accuracy {acc:.3f}: the task is trivial"


# ---- adapter ------------------------------------------------------------------------------------------------------

def test_adapter_splits_counts_and_paths():
    res = scan("synthetic:fer2013?n=140&size=24&seed=2")
    assert res.classes == CANONICAL7 and res.splits == ("train", "val", "test")
    by = {sp: np.bincount([s.label for s in res.samples if s.split == sp], minlength=7) for sp in res.splits}
    assert by["train"].sum() == 140 and by["train"].tolist() == profile_counts("fer2013", total=140).tolist()
    assert by["val"].tolist() == by["test"].tolist() == [4] * 7  # round(0.2*140)=28, balanced
    s = res.samples[0]
    assert s.path == "synthetic://fer2013/train/0" and s.pixels.shape == (24, 24)
    assert not s.pixels.flags.writeable
    # options as keywords are the same as in the query string; `total` is an alias of `n`
    kw = scan("synthetic:fer2013", "test", n=140, size=24, seed=2)
    alias = scan("synthetic:fer2013", "test", total=140, size=24, seed=2)
    q = [x for x in res.samples if x.split == "test"]
    assert all(np.array_equal(a.pixels, b.pixels) and a.label == b.label == c.label
               for a, b, c in zip(kw.samples, q, alias.samples))


def test_adapter_splits_are_disjoint_and_dataset_loads():
    from fairexpr.audit import pixel_hash

    res = scan("synthetic:rafdb?n=70&size=20&domain=wild&num_classes=8")
    assert res.classes == CANONICAL8
    hashes = {sp: {pixel_hash(s.pixels) for s in res.samples if s.split == sp} for sp in res.splits}
    assert not (hashes["train"] & hashes["test"]) and not (hashes["train"] & hashes["val"])
    assert all(s.label != 7 for s in res.samples)  # RAF-DB basic has no contempt
    ds = FERDataset.from_spec("synthetic:balanced", "val", n=70, size=20, channels=3, mode="RGB")
    item = ds[0]
    assert item["image"].shape == (3, 20, 20) and 0 <= item["label"] < 7


def test_adapter_errors():
    with pytest.raises(DataError, match="unknown option"):
        scan("synthetic:fer2013?bogus=1")
    with pytest.raises(DataError, match="unknown profile"):
        scan("synthetic:imagenet")
    with pytest.raises(DataError, match="unknown split"):
        scan("synthetic:fer2013", "public_test")
    with pytest.raises(DataError, match="must be a int"):
        scan("synthetic:fer2013?n=lots")
    with pytest.raises(DataError, match="test_fraction"):
        scan("synthetic:fer2013", test_fraction=0)
    with pytest.raises(DataError, match="domain"):
        scan("synthetic:fer2013", domain="mars")


def test_write_folder_roundtrip_through_folder_adapter(tmp_path):
    written = write_folder(tmp_path / "syn", {"train": [3, 1, 2, 4, 2, 2, 3], "test": "balanced"}, size=20,
                           total=None, scale=0.002)
    assert written["test"].tolist() == [2] * 7
    res = scan(f"folder:{tmp_path / 'syn'}")
    counts = {sp: np.bincount([s.label for s in res.samples if s.split == sp], minlength=7).tolist()
              for sp in ("train", "test")}
    assert counts == {"train": [3, 1, 2, 4, 2, 2, 3], "test": [2] * 7}
    files = sorted((tmp_path / "syn" / "train" / "happiness").glob("*.png"))
    assert len(files) == 4
    from PIL import Image

    assert Image.open(files[0]).size == (20, 20)
    # written pixels are exactly the generated ones (PNG is lossless)
    x, y = generate([3, 1, 2, 4, 2, 2, 3], size=20, split="train", shuffle=False)
    got = np.stack([np.asarray(Image.open(f)) for f in sorted((tmp_path / "syn" / "train").glob("*/*.png"),
                                                            key=lambda p: p.name)])
    assert np.array_equal(np.sort(got.reshape(len(got), -1), axis=0), np.sort(x.reshape(len(x), -1), axis=0))
