"""The dataset audit on a hand-built messy folder dataset (see conftest.py) and on synthetic data."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from fairexpr import audit as audit_mod
from fairexpr.audit import AuditReport, audit, imbalance_ratios, pixel_hash
from fairexpr.data import FERDataset, scan
from fairexpr.data.base import DataError
from fairexpr.labels import CANONICAL7


# ---- the equation --------------------------------------------------------------------------------------------------

def test_imbalance_ratio_hand_computed():
    # DIFC Eq. 1: IR_k = N_k / min_j N_j  (FER2013 train: happiness 7215 / disgust 436 = 16.548)
    assert imbalance_ratios([5, 10, 20]).tolist() == [1.0, 2.0, 4.0]
    np.testing.assert_allclose(imbalance_ratios([3995, 436, 7215]), [3995 / 436, 1.0, 7215 / 436])
    # empty classes: excluded from the minimum, ratio 0
    assert imbalance_ratios([0, 4, 6]).tolist() == [0.0, 1.0, 1.5]
    assert imbalance_ratios([0, 0]).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError):
        imbalance_ratios([-1, 2])


def test_pixel_hash_depends_on_pixels_and_shape_only():
    a = np.arange(64, dtype=np.uint8).reshape(8, 8)
    assert pixel_hash(a) == pixel_hash(a.copy())
    assert pixel_hash(a) != pixel_hash(a.reshape(4, 16))
    b = a.copy()
    b[0, 0] += 1
    assert pixel_hash(a) != pixel_hash(b)
    # an RGB image with equal channels is the same image as its grey version
    assert pixel_hash(np.stack([a] * 3, -1)) == pixel_hash(a)
    with pytest.raises(DataError, match="uint8"):
        pixel_hash(a.astype(np.float32))


# ---- the messy folder ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report(messy) -> AuditReport:
    root, _ = messy
    return audit(f"folder:{root}", on_bad_file="skip", progress=False)


def test_counts_and_imbalance(report):
    d = report.to_dict()
    assert d["splits"] == ["train", "test"]  # train first
    tr, te = d["per_split"]["train"], d["per_split"]["test"]
    assert [tr["counts"][c] for c in CANONICAL7] == [4, 2, 4, 5, 4, 3, 6]
    assert [te["counts"][c] for c in CANONICAL7] == [3, 2, 2, 2, 3, 3, 2]
    assert tr["n"] == 28 and te["n"] == 17 and d["n_images"] == 46 and d["n_readable"] == 45
    assert [tr["imbalance_ratio"][c] for c in CANONICAL7] == [2.0, 1.0, 2.0, 2.5, 2.0, 1.5, 3.0]
    assert tr["max_imbalance_ratio"] == 3.0 and te["max_imbalance_ratio"] == 1.5
    assert tr["empty_classes"] == [] and te["unreadable"] == 1 and tr["unreadable"] == 0


def test_duplicates_leakage_and_conflicts(report, messy):
    _, p = messy
    d = report.to_dict()
    dup = d["duplicates"]
    assert dup["n_groups"] == 4 and dup["n_images_in_groups"] == 8
    assert dup["n_conflicting_groups"] == 1 and dup["n_cross_split_groups"] == 2
    assert dup["cross_split"]["train"]["test"] == 2 and dup["cross_split"]["test"]["train"] == 2
    tr = d["per_split"]["train"]
    assert tr["images_in_duplicate_groups"] == 4 and tr["redundant_copies"] == 2 and tr["unique_images"] == 26
    conflict = [g for g in dup["groups"] if g["conflicting"]][0]
    assert conflict["labels"] == ["happiness", "sadness"]
    assert {m["path"] for m in conflict["members"]} == {str(p["src_happiness"]), str(p["leak_conflict"])}
    # the BMP copy is found by decoded pixels
    assert any(str(p["dup_bmp"]) in {m["path"] for m in g["members"]} for g in dup["groups"])
    leak = d["leakage"]
    assert leak["reference_split"] == "train" and leak["n"] == 2
    items = {it["path"]: it for it in leak["by_split"]["test"]["items"]}
    assert set(items) == {str(p["leak_same"]), str(p["leak_conflict"])}
    assert items[str(p["leak_same"])]["in_reference"] == [{"path": str(p["src_anger"]), "split": "train",
                                                           "label": "anger"}]
    assert items[str(p["leak_same"])]["label_conflict"] is False
    assert items[str(p["leak_conflict"])]["label_conflict"] is True
    assert leak["by_split"]["test"]["n_label_conflicts"] == 1


def test_near_blank_unreadable_sizes_modes(report, messy):
    _, p = messy
    d = report.to_dict()
    assert {it["path"] for it in d["near_blank"]["items"]} == {str(p["blank"]), str(p["near_blank"])}
    assert d["per_split"]["train"]["near_blank"] == 1 and d["per_split"]["test"]["near_blank"] == 1
    assert d["unreadable"]["n"] == 1
    item = d["unreadable"]["items"][0]
    assert item["path"] == str(p["corrupt"]) and item["split"] == "test" and "corrupt.png" in item["reason"]
    assert d["image_sizes"] == {"16x16": 44, "24x20": 1}
    assert d["modes"] == {"L": 44, "RGB": 1}
    # a stricter threshold keeps only the constant image
    strict = audit(f"folder:{p['blank'].parents[2]}", on_bad_file="skip", progress=False, near_blank_std=0.01)
    assert strict.to_dict()["near_blank"]["n"] == 1


def test_on_bad_file_error_names_the_file(messy):
    root, p = messy
    with pytest.raises(DataError, match="corrupt.png"):
        audit(f"folder:{root}", progress=False)


def test_json_roundtrip(report, tmp_path):
    text = report.to_json(tmp_path / "sub" / "audit.json")
    d = json.loads((tmp_path / "sub" / "audit.json").read_text())
    assert d == json.loads(text)
    assert d["imbalance_ratio_definition"].startswith("IR_k = N_k / min")


def test_clean_manifest_policies_and_csv_adapter(report, messy, tmp_path):
    _, p = messy
    out = tmp_path / "clean.csv"
    stats = report.write_clean_manifest(out)  # default: test images that also occur in train
    assert stats == {"written": 43, "dropped": 3, "unreadable": 1, "test_dups_in_train": 2}
    res = scan(f"csv:{out}")
    paths = {s.path for s in res.samples}
    assert str(p["leak_same"]) not in paths and str(p["leak_conflict"]) not in paths
    assert str(p["corrupt"]) not in paths and str(p["src_anger"]) in paths
    test_counts = np.bincount([s.label for s in res.samples if s.split == "test"], minlength=7)
    assert test_counts.tolist() == [2, 2, 2, 2, 2, 3, 2]
    # all duplicates: 4 groups of 2 -> 4 copies dropped, train copies kept (train comes first)
    stats = report.write_clean_manifest(out, drop="all_dups")
    assert stats["all_dups"] == 4 and stats["written"] == 45 - 4
    kept = {s.path for s in scan(f"csv:{out}").samples}
    assert str(p["src_happiness"]) in kept and str(p["leak_conflict"]) not in kept
    # combinations; conflicting drops both members of the conflicting group
    stats = report.write_clean_manifest(out, drop="conflicting,near_blank")
    assert stats == {"written": 41, "dropped": 5, "unreadable": 1, "conflicting": 2, "near_blank": 2}
    stats = report.write_clean_manifest(out, drop=["cross_split_dups"])
    assert stats["cross_split_dups"] == 2
    assert report.write_clean_manifest(out, drop="none")["written"] == 45
    with pytest.raises(DataError, match="unknown drop policy"):
        report.write_clean_manifest(out, drop="everything")


def test_chart_png(report, tmp_path):
    out = report.plot(tmp_path / "chart.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 400


def test_parallel_decoding_matches_serial(messy, monkeypatch):
    root, _ = messy
    serial = audit(f"folder:{root}", on_bad_file="skip", progress=False, workers=1)
    monkeypatch.setattr(audit_mod, "_SERIAL_BELOW", 1)
    monkeypatch.setattr(audit_mod, "_CHUNK", 7)
    par = audit(f"folder:{root}", on_bad_file="skip", progress=False, workers=2)
    a, b = serial.to_dict(), par.to_dict()
    a.pop("timing_s"), b.pop("timing_s")
    assert a == b
    assert serial.table["hash"].tolist() == par.table["hash"].tolist()


def test_split_selection_and_reference(messy):
    root, _ = messy
    rep = audit(f"folder:{root}", splits=["train"], on_bad_file="skip", progress=False)
    d = rep.to_dict()
    assert d["splits"] == ["train"] and d["leakage"]["n"] == 0 and d["duplicates"]["n_groups"] == 2
    rep = audit(f"folder:{root}", on_bad_file="skip", progress=False, reference_split="test")
    assert rep.to_dict()["leakage"]["by_split"]["train"]["n"] == 2
    with pytest.raises(DataError, match="reference split"):
        audit(f"folder:{root}", on_bad_file="skip", progress=False, reference_split="val")


# ---- synthetic / in-memory inputs ----------------------------------------------------------------------------------

def test_audit_synthetic_inline_pixels(tmp_path):
    rep = audit("synthetic:fer2013?n=70&size=20", progress=False)
    d = rep.to_dict()
    assert d["splits"] == ["train", "val", "test"]
    assert d["duplicates"]["n_groups"] == 0 and d["near_blank"]["n"] == 0
    assert d["per_split"]["train"]["n"] == 70 and d["per_split"]["test"]["max_imbalance_ratio"] == 1.0
    with pytest.raises(DataError, match="inline pixels"):
        rep.write_clean_manifest(tmp_path / "x.csv")


def test_audit_dataset_object_and_empty_class(messy):
    root, _ = messy
    ds = FERDataset.from_spec(f"folder:{root}", "train")
    keep = [i for i, s in enumerate(ds.samples) if s.label != 1]  # drop every disgust image
    rep = audit(ds.subset(keep), progress=False)
    d = rep.to_dict()["per_split"]["train"]
    assert d["counts"]["disgust"] == 0 and d["empty_classes"] == ["disgust"]
    assert d["imbalance_ratio"]["disgust"] == 0.0
    assert d["imbalance_ratio"]["neutral"] == 2.0  # 6 / min over present classes (3, surprise)
    with pytest.raises(DataError, match="expects a FORMAT:PATH"):
        audit(42)  # type: ignore[arg-type]


def test_bad_arguments(messy):
    root, _ = messy
    with pytest.raises(DataError, match="on_bad_file"):
        audit(f"folder:{root}", on_bad_file="ignore", progress=False)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="does not exist"):
        audit(f"folder:{os.path.join(str(root), 'nope')}", progress=False)

# The real-data check (full FER2013 through the CLI) is in test_audit_cli.py::test_audit_cli_fer2013.
