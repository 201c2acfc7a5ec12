"""Bad numbers on the command line are usage errors (exit 2, one line naming the option, no traceback), never
ignored or turned into 'unreadable' rows; predict with no readable input at all fails."""
from __future__ import annotations

import pytest

from fairexpr.cli import main


def run(argv, capsys):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("argv, option", [
    (["predict", "--checkpoint", "{ckpt}", "--min-face", "-5", "{img}"], "--min-face"),
    (["predict", "--checkpoint", "{ckpt}", "--every-n", "0", "{img}"], "--every-n"),
    (["predict", "--checkpoint", "{ckpt}", "--fps", "0", "{img}"], "--fps"),
    (["predict", "--checkpoint", "{ckpt}", "--threshold", "1.5", "{img}"], "--threshold"),
    (["predict", "--checkpoint", "{ckpt}", "--batch-size", "0", "{img}"], "--batch-size"),
    (["serve", "--checkpoint", "{ckpt}", "--port", "99999"], "--port"),
    (["serve", "--checkpoint", "{ckpt}", "--max-bytes", "0"], "--max-bytes"),
    (["train", "--config", "configs/baseline_ce_cpu.yaml", "--out", "{tmp}/r", "--epochs", "0"], "--epochs"),
    (["train", "--config", "configs/baseline_ce_cpu.yaml", "--out", "{tmp}/r", "--minutes", "0"], "--minutes"),
    (["adapt", "--config", "configs/difc_mcd_cpu.yaml", "--source", "synthetic:fer2013", "--target", "synthetic:fer2013",
      "--out", "{tmp}/a", "--epochs", "0"], "--epochs"),
])
def test_bad_numbers_are_usage_errors(argv, option, ckpt, tmp_path, capsys):
    img = tmp_path / "x.png"
    img.write_bytes(b"")
    argv = [a.format(ckpt=ckpt, img=img, tmp=tmp_path) for a in argv]
    rc, out, err = run(argv, capsys)
    assert rc == 2, (out, err)
    assert option in err and "Traceback" not in err + out
    assert not (tmp_path / "r").exists() and not (tmp_path / "a").exists()


def test_predict_with_nothing_readable_fails(ckpt, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    rc, out, err = run(["predict", "--checkpoint", ckpt, bad, tmp_path / "missing.png", "--no-progress"], capsys)
    assert rc == 1 and "none of the 2 input(s) could be read" in err
    # one readable input among bad ones: still exit 0 without --strict
    from PIL import Image
    import numpy as np

    Image.fromarray(np.zeros((48, 48), np.uint8)).save(tmp_path / "ok.png")
    rc, _, err = run(["predict", "--checkpoint", ckpt, "--crops", bad, tmp_path / "ok.png", "--no-progress"], capsys)
    assert rc == 0, err


def test_unreadable_inputs_name_the_path_once(ckpt, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    rc, out, err = run(["predict", "--checkpoint", ckpt, bad, "--no-progress"], capsys)
    line = next(x for x in out.splitlines() if "unreadable:" in x)
    assert line.count(str(bad)) == 1, line


def test_decompression_bomb_names_one_limit(tmp_path):
    import io

    from PIL import Image

    from fairexpr.data.base import DataError
    from fairexpr.inference.images import decode_rgb

    buf = io.BytesIO()
    Image.new("L", (12000, 9000)).save(buf, format="PNG")  # 108 MP: above PIL's own bomb limit
    with pytest.raises(DataError) as e:
        decode_rgb(buf.getvalue(), name="big.png", max_pixels=16_000_000)
    assert str(e.value) == "big.png: image has more pixels than the limit of 16000000" or "12000x9000" in str(e.value)
    assert "DOS" not in str(e.value) and str(e.value).count("limit") == 1


def test_adapt_summary_names_the_confusion_order(tmp_path):
    import json

    from fairexpr.cli.adapt import named_order

    (tmp_path / "model.json").write_text(json.dumps({"classes": ["anger", "disgust", "fear"]}))
    assert named_order("[2, 0, 1]", str(tmp_path)) == "fear > anger > disgust"
    assert named_order("null", str(tmp_path)) == "null"


@pytest.mark.parametrize("argv", [["predict", "--min-face", "-5", "x.png"],   # click usage error
                                  ["zoo", "--card"],                           # UserError
                                  ["eval", "--checkpoint", "nope/x", "--data", "synthetic:fer2013"],  # unknown path
                                  ["bogus"]])                                  # unknown command
def test_every_error_has_one_style(argv, capsys):
    rc, out, err = run(argv, capsys)
    assert rc == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
