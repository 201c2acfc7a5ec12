"""Official counts on the shared real datasets (skipped unless FAIREXPR_DATA is set)."""
from __future__ import annotations

import time
from collections import Counter

import pytest

from fairexpr.data import FERDataset, scan
from fairexpr.labels import CANONICAL7, CANONICAL8

pytestmark = pytest.mark.realdata


def test_fer2013_official_counts(real_data):
    t = time.perf_counter()
    res = scan(f"fer2013:{real_data / 'fer2013'}")
    assert time.perf_counter() - t < 10  # scanning, no decoding
    assert Counter(s.split for s in res.samples) == {"train": 28709, "public_test": 3589, "private_test": 3589}
    train = Counter(CANONICAL7[s.label] for s in res.samples if s.split == "train")
    assert train["disgust"] == 436 and train["happiness"] == 7215 and len(res.skipped) == 0
    assert len(scan(f"fer2013:{real_data / 'fer2013'}", "test").samples) == 7178


def test_ferplus_protocols(real_data):
    root = real_data / "ferplus"
    res = scan(f"ferplus:{root}")  # majority, 8 classes
    assert Counter(s.split for s in res.samples) == {"train": 25045, "val": 3191, "test": 3137}
    why = Counter(r.split(":")[1].strip() for _, r in res.skipped.items)
    assert sum(why.values()) == 35710 - 31373
    assert why["no class has more than half of the votes"] == 4236
    test = Counter(CANONICAL8[s.label] for s in res.samples if s.split == "test")
    assert test == {"neutral": 1083, "happiness": 892, "surprise": 394, "sadness": 382, "anger": 269, "fear": 86,
                    "disgust": 16, "contempt": 15}
    r7 = scan(f"ferplus:{root}", num_classes=7)
    assert len(r7.samples) == 31222
    prob = scan(f"ferplus:{root}", protocol="probability")
    assert len(prob.samples) == 35485 and all(abs(sum(s.soft_label) - 1) < 1e-5 for s in prob.samples[:500])


def test_ckplus_counts(real_data):
    res = scan(f"ckplus:{real_data / 'ckplus'}")
    assert len(res.samples) == 981 and len({s.subject for s in res.samples}) == 118
    assert res.classes == CANONICAL8
    seqs = Counter(s.sequence for s in res.samples)
    assert min(seqs.values()) >= 1 and all(s.sequence.startswith(s.subject) for s in res.samples)


def test_utkface_faces(real_data):
    ds = FERDataset.from_spec(f"faces:{real_data / 'utkface/crop_part1'}")
    assert len(ds) == 3000 and set(ds.labels.tolist()) == {-1}
    assert sum("age" in s.meta for s in ds.samples) == 2998  # two names lack the race field
