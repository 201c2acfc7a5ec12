"""Every adapter on a tiny tree in its exact published layout: labels, metadata, splits, bad input."""
from __future__ import annotations

import csv as csvmod
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fairexpr.data import DataError, FERDataset, list_adapters, scan
from fairexpr.labels import CANONICAL7, CANONICAL8

from .conftest import write_image


def labels_of(res):
    return Counter((res.classes[s.label] if s.label >= 0 else None) for s in res.samples)


def test_all_formats_registered():
    assert {"fer2013", "ferplus", "ckplus", "jaffe", "rafdb", "affectnet", "sfew", "folder", "csv",
            "faces"} <= set(list_adapters())


# ----------------------------------------------------------------------------------------------- fer2013
@pytest.fixture
def fer_tree(tmp_path):
    r = tmp_path / "fer2013"
    write_image(r / "train/angry/Training_10.jpg")
    write_image(r / "train/happy/Training_11.jpg")
    write_image(r / "train/happy/Training_12.jpg")
    write_image(r / "test/sad/PublicTest_20.jpg")
    write_image(r / "test/sad/PrivateTest_21.jpg")
    write_image(r / "test/surprise/PrivateTest_22.jpg")
    return r


def test_fer2013_folders(fer_tree):
    res = scan(f"fer2013:{fer_tree}")
    assert res.classes == CANONICAL7
    assert Counter(s.split for s in res.samples) == {"train": 3, "public_test": 1, "private_test": 2}
    assert labels_of(res) == {"anger": 1, "happiness": 2, "sadness": 2, "surprise": 1}
    s = next(s for s in res.samples if s.path.endswith("PublicTest_20.jpg"))
    assert s.meta == {"usage": "PublicTest", "id": "20"} and s.label == CANONICAL7.index("sadness")
    assert len(scan(f"fer2013:{fer_tree}", "test").samples) == 3
    assert len(scan(f"fer2013:{fer_tree}", "private_test").samples) == 2
    assert {s.split for s in scan(f"fer2013:{fer_tree}", "train").samples} == {"train"}


@pytest.mark.parametrize("make, needle", [
    (lambda r: write_image(r / "train/bored/Training_1.jpg"), "bored"),
    (lambda r: (r / "train/fear").mkdir(), "empty"),
    (lambda r: (r / "train/happy/Training_13.jpg").write_bytes(b""), "Training_13.jpg"),
    (lambda r: (r / "train/happy/notes.txt").write_text("x"), "notes.txt"),
    (lambda r: write_image(r / "test/sad/Foo_1.jpg"), "Foo_1.jpg"),
])
def test_fer2013_bad_files(fer_tree, make, needle):
    make(fer_tree)
    with pytest.raises(DataError, match=needle):
        scan(f"fer2013:{fer_tree}")
    res = scan(f"fer2013:{fer_tree}", on_bad_file="skip")
    assert len(res.samples) == 6 and len(res.skipped) == 1
    assert needle in res.skipped.items[0][0] or needle in res.skipped.items[0][1]


def test_fer2013_missing_folder_and_unknown_split(tmp_path, fer_tree):
    import shutil

    with pytest.raises(DataError, match="unknown split 'valid'"):
        scan(f"fer2013:{fer_tree}", "valid")
    shutil.rmtree(fer_tree / "test")
    with pytest.raises(DataError, match="missing folder .*test"):
        scan(f"fer2013:{fer_tree}", "test")


def _fer_csv(path: Path, rows):
    with open(path, "w", newline="") as f:
        w = csvmod.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        w.writerows(rows)


def test_fer2013_csv(tmp_path):
    px = np.arange(2304) % 256
    s = " ".join(map(str, px))
    _fer_csv(tmp_path / "fer2013.csv", [[0, s, "Training"], [6, s, "PublicTest"], [3, s, "PrivateTest"]])
    for spec in (f"fer2013:{tmp_path}", f"fer2013:{tmp_path / 'fer2013.csv'}"):
        res = scan(spec)
        assert [CANONICAL7[x.label] for x in res.samples] == ["anger", "neutral", "happiness"]
        assert [x.split for x in res.samples] == ["train", "public_test", "private_test"]
        assert res.samples[0].pixels.dtype == np.uint8 and res.samples[0].pixels.shape == (48, 48)
        assert res.samples[0].pixels[0, 5] == 5 and res.samples[1].meta["usage"] == "PublicTest"
    ds = FERDataset.from_spec(f"fer2013:{tmp_path}", "test")
    assert len(ds) == 2 and ds[0]["image"].shape == (1, 48, 48)


def test_parse_pixel_rows_hand_computed():
    from fairexpr.data.adapters.fer2013 import parse_pixel_rows

    good = " ".join(["0", "255", "07", "42"] * 576)
    counts, nonint, imgs = parse_pixel_rows([good, "1 2 3", "1 2x 3", " ".join(["256"] * 2304), "  9\t8  "])
    assert counts.tolist() == [2304, 3, 3, 2304, 2] and nonint.tolist() == [False, False, True, False, False]
    assert imgs[0][0, :4].tolist() == [0, 255, 7, 42] and imgs[0].dtype == np.uint8
    assert imgs[1] is None and imgs[3] is None  # wrong count; 256 out of range


def test_fer2013_csv_bad_rows(tmp_path):
    s = " ".join(["7"] * 2304)
    _fer_csv(tmp_path / "fer2013.csv", [[0, s, "Training"], [1, " ".join(["7"] * 2303), "Training"],
                                        [9, s, "Training"], [2, s, "Bogus"]])
    with pytest.raises(DataError, match=r"line 3: column 'pixels' has 2303 values; expected 2304"):
        scan(f"fer2013:{tmp_path}")
    res = scan(f"fer2013:{tmp_path}", on_bad_file="skip")
    assert len(res.samples) == 1
    reasons = " ".join(r for _, r in res.skipped.items)
    assert len(res.skipped) == 3 and "'emotion' is '9'" in reasons and "'Usage' is 'Bogus'" in reasons
    _fer_csv(tmp_path / "fer2013.csv", [[0, s.replace("7", "x", 1), "Training"]])
    with pytest.raises(DataError, match="line 2: column 'pixels' has non-integer"):
        scan(f"fer2013:{tmp_path}")
    (tmp_path / "fer2013.csv").write_text("emotion,Usage\n0,Training\n")
    with pytest.raises(DataError, match="missing column.*pixels"):
        scan(f"fer2013:{tmp_path}")


# ----------------------------------------------------------------------------------------------- ferplus
#            neutral happy surpr sad anger disg fear contempt unknown NF
FERPLUS_ROWS = [
    ("fer0000000.png", [4, 0, 0, 1, 3, 2, 0, 0, 0, 0]),  # ones removed -> 4 of 9: no majority
    ("fer0000001.png", [6, 0, 1, 1, 0, 0, 0, 0, 2, 0]),  # -> 6 of 8: neutral
    ("fer0000002.png", [0, 2, 0, 0, 0, 0, 0, 8, 0, 0]),  # contempt
    ("fer0000003.png", [0, 0, 0, 0, 0, 0, 0, 3, 7, 0]),  # unknown
    ("fer0000004.png", [0, 0, 0, 0, 0, 0, 0, 0, 3, 7]),  # not a face
    ("fer0000005.png", [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]),  # all single votes removed: no majority
    ("fer0000006.png", [0, 9, 1, 0, 0, 0, 0, 0, 0, 0]),  # happiness
]


def make_ferplus(root: Path, rows=FERPLUS_ROWS, folder="FER2013Train"):
    d = root / folder
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "label.csv", "w", newline="") as f:
        w = csvmod.writer(f)
        for name, votes in rows:
            write_image(d / name)
            w.writerow([name, "(0, 0, 48, 48)"] + votes)
    return root


def test_ferplus_majority(tmp_path):
    r = make_ferplus(tmp_path)
    res = scan(f"ferplus:{r}", "train")
    assert res.classes == CANONICAL8
    got = {Path(s.path).name: CANONICAL8[s.label] for s in res.samples}
    assert got == {"fer0000001.png": "neutral", "fer0000002.png": "contempt", "fer0000006.png": "happiness"}
    reasons = {Path(p).name: r for p, r in res.skipped.items}
    assert "no class has more than half" in reasons["fer0000000.png"]
    assert "no class has more than half" in reasons["fer0000005.png"]
    assert "'unknown'" in reasons["fer0000003.png"] and "'NF'" in reasons["fer0000004.png"]
    s = next(s for s in res.samples if s.path.endswith("1.png"))
    assert s.meta["votes"] == (6, 0, 1, 1, 0, 0, 0, 0, 2, 0) and s.meta["box"] == (0, 0, 48, 48)
    assert s.meta["usage"] == "Training" and s.soft_label is None
    res7 = scan(f"ferplus:{r}", "train", num_classes=7)
    assert res7.classes == CANONICAL7 and len(res7.samples) == 2
    assert any("contempt" in why for _, why in res7.skipped.items)


def test_ferplus_probability(tmp_path):
    r = make_ferplus(tmp_path)
    res = scan(f"ferplus:{r}", "train", protocol="probability")
    by = {Path(s.path).name: s for s in res.samples}
    # fer0000000: votes after outlier removal neutral 4, anger 3, disgust 2 -> /9
    s0 = by["fer0000000.png"]
    np.testing.assert_allclose(s0.soft_label, [3 / 9, 2 / 9, 0, 0, 0, 0, 4 / 9, 0], rtol=1e-6)
    assert CANONICAL8[s0.label] == "neutral"
    np.testing.assert_allclose(by["fer0000002.png"].soft_label, [0, 0, 0, 0.2, 0, 0, 0, 0.8], rtol=1e-6)
    assert set(by) == {"fer0000000.png", "fer0000001.png", "fer0000002.png", "fer0000006.png"}
    assert len(res.skipped) == 3  # unknown, NF, no votes left
    res7 = scan(f"ferplus:{r}", "train", protocol="probability", num_classes=7)
    s2 = {Path(s.path).name: s for s in res7.samples}["fer0000002.png"]  # contempt votes dropped first
    np.testing.assert_allclose(s2.soft_label, [0, 0, 0, 1.0, 0, 0, 0], rtol=1e-6)


def test_ferplus_bad_input(tmp_path):
    r = make_ferplus(tmp_path)
    (r / "FER2013Train/fer0000006.png").unlink()
    with pytest.raises(DataError, match="fer0000006.png: image listed in the annotations is missing"):
        scan(f"ferplus:{r}", "train")
    assert len(scan(f"ferplus:{r}", "train", on_bad_file="skip").samples) == 2
    with pytest.raises(DataError, match="missing folder .*FER2013Valid"):
        scan(f"ferplus:{r}", "val")
    with open(r / "FER2013Train/label.csv", "a") as f:
        f.write("fer0000009.png,1,2,3\n")
    with pytest.raises(DataError, match=r"label.csv line 8: has 4 columns; expected 12"):
        scan(f"ferplus:{r}", "train", on_bad_file="error")
    with pytest.raises(DataError, match="protocol"):
        scan(f"ferplus:{r}", "train", protocol="vote")


# ----------------------------------------------------------------------------------------------- ckplus
def test_ckplus(tmp_path):
    r = tmp_path / "ckplus/CK+48"
    for rel in ["anger/S010_004_00000017.png", "anger/S010_004_00000018.png", "happy/S011_006_00000013.png",
                "contempt/S014_002_00000016.png", "sadness/S010_002_00000014.png"]:
        write_image(r / rel)
    res = scan(f"ckplus:{tmp_path / 'ckplus'}")
    assert res.classes == CANONICAL8 and len(res.samples) == 5
    s = next(s for s in res.samples if s.path.endswith("S010_004_00000018.png"))
    assert (s.subject, s.sequence, s.meta["frame"], s.split) == ("S010", "S010_004", 18, "all")
    assert labels_of(res) == {"anger": 2, "happiness": 1, "contempt": 1, "sadness": 1}
    res7 = scan(f"ckplus:{r}", num_classes=7)
    assert res7.classes == CANONICAL7 and len(res7.samples) == 4 and len(res7.skipped) == 1
    write_image(r / "fear/frame1.png")
    with pytest.raises(DataError, match="frame1.png: file name does not match S<subject>"):
        scan(f"ckplus:{r}")
    with pytest.raises(DataError, match="unknown split"):
        scan(f"ckplus:{r}", "train")


# ----------------------------------------------------------------------------------------------- jaffe
def test_jaffe(tmp_path):
    for n in ["KA.AN1.39.tiff", "KA.HA2.30.tiff", "YM.SU3.60.tiff", "NA.NE1.202.tiff"]:
        write_image(tmp_path / n)
    res = scan(f"jaffe:{tmp_path}")
    assert labels_of(res) == {"anger": 1, "happiness": 1, "surprise": 1, "neutral": 1}
    s = next(s for s in res.samples if s.path.endswith("YM.SU3.60.tiff"))
    assert s.subject == "YM" and s.meta == {"code": "SU", "take": 3, "id": 60}
    (tmp_path / "README").write_text("jaffe")
    write_image(tmp_path / "KA.XX1.40.tiff")
    with pytest.raises(DataError, match="KA.XX1.40.tiff: unknown expression code 'XX'"):
        scan(f"jaffe:{tmp_path}")
    res = scan(f"jaffe:{tmp_path}", on_bad_file="skip")
    assert len(res.samples) == 4 and len(res.skipped) == 2
    assert any(p.endswith("README") and "not an image file" in why for p, why in res.skipped.items)
    assert any("unknown expression code 'XX'" in why for _, why in res.skipped.items)


# ----------------------------------------------------------------------------------------------- rafdb
def make_rafdb(root: Path, lines):
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel/list_patition_label.txt").write_text("".join(f"{n} {c}\n" for n, c in lines))
    for n, _ in lines:
        stem = n.rsplit(".", 1)[0]
        write_image(root / f"Image/aligned/{stem}_aligned.jpg", color=True)
        write_image(root / f"Image/original/{n}", size=16, color=True)
    return root


def test_rafdb(tmp_path):
    r = make_rafdb(tmp_path, [("train_00001.jpg", 5), ("train_00002.jpg", 1), ("test_0001.jpg", 7),
                              ("test_0002.jpg", 4)])
    res = scan(f"rafdb:{r}")
    got = {Path(s.path).name: (CANONICAL7[s.label], s.split) for s in res.samples}
    assert got == {"train_00001_aligned.jpg": ("sadness", "train"), "train_00002_aligned.jpg": ("surprise", "train"),
                   "test_0001_aligned.jpg": ("neutral", "test"), "test_0002_aligned.jpg": ("happiness", "test")}
    res = scan(f"rafdb:{r}", "test", aligned=False)
    assert sorted(Path(s.path).name for s in res.samples) == ["test_0001.jpg", "test_0002.jpg"]
    assert all("/Image/original/" in s.path for s in res.samples)
    with open(r / "EmoLabel/list_patition_label.txt", "a") as f:
        f.write("train_00003.jpg 9\n")
    with pytest.raises(DataError, match=r"list_patition_label.txt line 5: label '9' is not an integer 1-7"):
        scan(f"rafdb:{r}")
    (r / "Image/aligned/test_0002_aligned.jpg").unlink()
    res = scan(f"rafdb:{r}", on_bad_file="skip")
    assert len(res.samples) == 3 and len(res.skipped) == 2


# ----------------------------------------------------------------------------------------------- affectnet
def test_affectnet(tmp_path):
    cols = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
            "expression", "valence", "arousal"]
    lm = ";".join(str(float(i)) for i in range(136))
    rows = [("1/a.jpg", 0), ("1/b.jpg", 7), ("2/c.jpg", 8), ("2/d.jpg", 10), ("2/e.jpg", 6)]
    with open(tmp_path / "training.csv", "w", newline="") as f:
        w = csvmod.writer(f)
        w.writerow(cols)
        for rel, e in rows:
            write_image(tmp_path / "Manually_Annotated_Images" / rel, color=True)
            w.writerow([rel, 10, 12, 100, 101, lm, e, 0.5, -0.25])
    with open(tmp_path / "validation.csv", "w", newline="") as f:
        w = csvmod.writer(f)
        w.writerow(cols)
        w.writerow(["1/a.jpg", 1, 2, 3, 4, "", 3, 0, 0])
    res = scan(f"affectnet:{tmp_path}")
    got = {(Path(s.path).name, s.split): CANONICAL8[s.label] for s in res.samples}
    assert got == {("a.jpg", "train"): "neutral", ("b.jpg", "train"): "contempt", ("e.jpg", "train"): "anger",
                   ("a.jpg", "val"): "surprise"}
    s = res.samples[0]
    assert s.meta["box"] == (10, 12, 100, 101) and s.meta["landmarks"].shape == (68, 2)
    assert s.meta["valence"] == 0.5 and s.meta["arousal"] == -0.25
    assert res.samples[-1].meta["landmarks"] is None
    reasons = [why for _, why in res.skipped.items]
    assert len(reasons) == 2 and any("(none)" in x for x in reasons) and any("(non-face)" in x for x in reasons)
    res7 = scan(f"affectnet:{tmp_path}", "train", num_classes=7)
    assert len(res7.samples) == 2 and len(res7.skipped) == 3
    (tmp_path / "validation.csv").write_text("subDirectory_filePath,expression\n1/a.jpg,1\n")
    with pytest.raises(DataError, match="validation.csv: missing column"):
        scan(f"affectnet:{tmp_path}", "val")


# ----------------------------------------------------------------------------------------------- sfew
def test_sfew(tmp_path):
    write_image(tmp_path / "Train/Angry/a.png", color=True)
    write_image(tmp_path / "Train/Happy/b.png", color=True)
    write_image(tmp_path / "Val/Sad/c.png", color=True)
    res = scan(f"sfew:{tmp_path}")
    assert {(Path(s.path).name, s.split, CANONICAL7[s.label]) for s in res.samples} == {
        ("a.png", "train", "anger"), ("b.png", "train", "happiness"), ("c.png", "val", "sadness")}
    (tmp_path / "Val/Contempt").mkdir()
    write_image(tmp_path / "Val/Contempt/x.png")
    with pytest.raises(DataError, match="unknown class folder 'Contempt'"):
        scan(f"sfew:{tmp_path}", "val")


# ----------------------------------------------------------------------------------------------- folder
def test_folder_split_tree_and_class_map(tmp_path):
    for rel in ["train/a/1.png", "train/b/2.png", "Valid/a/3.png", "test/happy/4.png", "test/b/sub/5.png"]:
        write_image(tmp_path / rel)
    with pytest.raises(DataError, match="unknown class folder 'a'"):
        scan(f"folder:{tmp_path}")
    res = scan(f"folder:{tmp_path}", class_map="a=anger,b=contempt")
    assert res.classes == CANONICAL8 and set(res.splits) == {"train", "val", "test"}
    got = {Path(s.path).name: (s.split, CANONICAL8[s.label]) for s in res.samples}
    assert got == {"1.png": ("train", "anger"), "2.png": ("train", "contempt"), "3.png": ("val", "anger"),
                   "4.png": ("test", "happiness"), "5.png": ("test", "contempt")}
    assert scan(f"folder:{tmp_path}", "val", class_map={"a": "angry", "b": "contempt"}).classes == CANONICAL8


def test_folder_flat(tmp_path):
    write_image(tmp_path / "Happy/1.jpg")
    write_image(tmp_path / "neutral/2.jpg")
    res = scan(f"folder:{tmp_path}")
    assert res.classes == CANONICAL7 and {s.split for s in res.samples} == {"all"}
    assert labels_of(res) == {"happiness": 1, "neutral": 1}
    (tmp_path / "Happy/3.jpg").write_bytes(b"")
    res = scan(f"folder:{tmp_path}", on_bad_file="skip")
    assert res.skipped.items[0][0].endswith("3.jpg") and "0 bytes" in res.skipped.items[0][1]


# ----------------------------------------------------------------------------------------------- csv
def test_csv_manifest(tmp_path):
    write_image(tmp_path / "imgs/a.png")
    write_image(tmp_path / "imgs/b.png")
    write_image(tmp_path / "imgs/c.png")
    (tmp_path / "m.csv").write_text("path,label,subject,split,note\nimgs/a.png,happy,S1,train,x\n"
                                    "imgs/b.png,7,S2,test,y\nimgs/c.png,,S3,train,z\n")
    res = scan(f"csv:{tmp_path / 'm.csv'}")
    assert res.classes == CANONICAL8 and set(res.splits) == {"train", "test"}
    by = {Path(s.path).name: s for s in res.samples}
    assert CANONICAL8[by["a.png"].label] == "happiness" and CANONICAL8[by["b.png"].label] == "contempt"
    assert by["c.png"].label == -1 and by["a.png"].subject == "S1" and by["a.png"].meta == {"note": "x"}
    assert len(scan(f"csv:{tmp_path / 'm.csv'}", "test").samples) == 1
    (tmp_path / "m.csv").write_text("path,label\nimgs/a.png,bored\nimgs/zz.png,sad\nimgs/b.png,sad\n")
    with pytest.raises(DataError, match="line 2: column 'label' is 'bored'"):
        scan(f"csv:{tmp_path / 'm.csv'}")
    res = scan(f"csv:{tmp_path / 'm.csv'}", on_bad_file="skip")
    assert len(res.samples) == 1 and res.samples[0].split == "all"
    assert res.skipped.items[1][0].endswith("zz.png") and "missing" in res.skipped.items[1][1]
    (tmp_path / "m.csv").write_text("file,label\nimgs/a.png,sad\n")
    with pytest.raises(DataError, match="missing column.*path"):
        scan(f"csv:{tmp_path / 'm.csv'}")


# ----------------------------------------------------------------------------------------------- faces
def test_faces(tmp_path):
    write_image(tmp_path / "26_1_2_20170116174525125.jpg.chip.jpg", color=True)
    write_image(tmp_path / "id7/x.png", color=True)
    res = scan(f"faces:{tmp_path}")
    assert all(s.label == -1 and s.split == "all" for s in res.samples)
    by = {Path(s.path).name: s for s in res.samples}
    assert by["26_1_2_20170116174525125.jpg.chip.jpg"].meta == {"age": 26, "gender": 1, "race": 2}
    assert by["x.png"].subject == "id7" and by["x.png"].meta == {}
    (tmp_path / "broken.gif").write_bytes(b"")
    with pytest.raises(DataError, match="broken.gif: file is empty"):
        scan(f"faces:{tmp_path}")


def test_corrupt_image_surfaces_at_load(tmp_path):
    write_image(tmp_path / "happy/ok.png")
    (tmp_path / "happy/bad.png").write_bytes(b"\x89PNG not really")
    ds = FERDataset.from_spec(f"folder:{tmp_path}")  # scanning does not decode
    bad = next(i for i, s in enumerate(ds.samples) if s.path.endswith("bad.png"))
    with pytest.raises(DataError, match="bad.png: cannot decode"):
        ds.load_image(bad)


def test_unknown_option_is_an_error(fer_tree):
    with pytest.raises(DataError, match="unknown option"):
        scan(f"fer2013:{fer_tree}", protocol="majority")
