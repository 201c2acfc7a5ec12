"""`audit` reports identities: subjects/sequences per split, images per subject and subjects shared between splits
(identity leakage that pixel hashes cannot see). Every expected number below is counted by hand."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fairexpr.audit import audit
from fairexpr.cli import cli


def _manifest(tmp_path, rows):
    rng = np.random.default_rng(0)
    lines = ["path,label,subject,sequence,split"]
    for i, (label, subject, sequence, split) in enumerate(rows):
        f = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(f)  # every image distinct
        lines.append(f"{f.name},{label},{subject},{sequence},{split}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    return f"csv:{tmp_path / 'm.csv'}"


ROWS = [  # train: A (3 images, 2 sequences), B (1); test: B (2 images), C (1), one image without a subject id
    ("happiness", "A", "A_1", "train"), ("happiness", "A", "A_1", "train"), ("sadness", "A", "A_2", "train"),
    ("anger", "B", "B_1", "train"),
    ("anger", "B", "B_2", "test"), ("fear", "B", "B_2", "test"), ("fear", "C", "C_1", "test"),
    ("neutral", "", "", "test"),
]


def test_identities_hand_counted(tmp_path):
    ident = audit(_manifest(tmp_path, ROWS), progress=False).to_dict()["identities"]
    assert ident["known"] and ident["n_subjects"] == 3
    tr, te = ident["per_split"]["train"], ident["per_split"]["test"]
    assert (tr["subjects"], tr["sequences"], te["subjects"], te["sequences"]) == (2, 3, 2, 2)
    assert tr["images_per_subject"] == {"min": 1, "median": 2.0, "mean": 2.0, "max": 3}
    assert te["images_per_subject"] == {"min": 1, "median": 1.5, "mean": 1.5, "max": 2}
    assert te["images_without_subject"] == 1 and tr["images_without_subject"] == 0
    assert ident["subject_overlap"] == {"train": {"test": 1}, "test": {"train": 1}}
    assert ident["shared_subjects"] == {"train|test": ["B"]}


def test_identities_unknown_and_printed(tmp_path, messy):
    root, _ = messy  # a folder dataset: no subject ids
    d = audit(f"folder:{root}", on_bad_file="skip", progress=False).to_dict()
    assert d["identities"]["known"] is False and "cannot be checked" in d["identities"]["note"]
    res = CliRunner().invoke(cli, ["audit", _manifest(tmp_path, ROWS), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "identity leakage: 1 subjects in both train and test" in res.output and "(e.g. B)" in res.output
    assert "train: 2 subjects, 3 sequences" in res.output


@pytest.mark.realdata
def test_identities_ckplus(real_data, tmp_path):
    root = real_data / "ckplus" / "CK+48"
    if not root.is_dir():
        pytest.skip(f"{root} is missing")
    out = tmp_path / "a.json"
    res = CliRunner().invoke(cli, ["audit", f"ckplus:{root}", "--json-out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    ident = json.loads(out.read_text())["identities"]
    v = ident["per_split"]["all"]
    assert v["subjects"] == 118 and v["sequences"] == 327  # 981 frames = 3 per sequence
    assert v["images_per_subject"]["min"] >= 3 and v["images_per_subject"]["max"] <= 981
    assert "118 subjects" in res.output
