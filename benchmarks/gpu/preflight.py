"""What ``benchmarks/gpu/run.sh`` needs before it starts 15 cell processes on a lent GPU, checked in seconds, so that
a missing dataset, package or weights file costs no device minutes: every problem is one line naming what is missing
and what was expected, all of them are listed (not only the first; a missing package skips the later checks, which
import fairexpr), and the exit status is 2.

Checked: the Python packages fairexpr imports (``pyproject.toml``'s dependencies, by import name; this script puts
``src/`` on its path, so fairexpr itself need not be installed there), the dlib face-recognition weights the
recipes start from (``pretrained: dlib``), a CUDA device (``--cuda``), and each dataset the run reads under
``--data`` (scanned by fairexpr's own adapters: files listed and labels read, no pixel decoded), with its sample count.

    python benchmarks/gpu/preflight.py --data $FAIREXPR_DATA --cuda     # what run.sh runs first
    python benchmarks/gpu/preflight.py                                  # packages and weights only (run.sh --toy)
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

#: pyproject.toml's dependency -> the module(s) fairexpr imports for it (any one of several will do)
IMPORTS: dict[str, tuple[str, ...]] = {
    "torch": ("torch",), "torchvision": ("torchvision",), "lightning-fabric": ("lightning_fabric", "lightning.fabric"),
    "safetensors": ("safetensors",), "numpy": ("numpy",), "pillow": ("PIL",), "pandas": ("pandas",),
    "matplotlib": ("matplotlib",), "scikit-learn": ("sklearn",), "scipy": ("scipy",), "pyyaml": ("yaml",),
    "click": ("click",), "rich": ("rich",), "tqdm": ("tqdm",), "opencv-python-headless": ("cv2",),
}


def datasets(data: Path) -> list[tuple[str, str, str | None, dict]]:
    """(what for, address, split, options) of every dataset run.sh reads: DIFC's source and target
    (``configs/difc_mcd_dlib.yaml``), GReFEL's FER+ majority protocol (``benchmarks/grefel.py --datasets ferplus``)."""
    fer, ck, fp = f"fer2013:{data}/fer2013", f"ckplus:{data}/ckplus/CK+48", f"ferplus:{data}/ferplus"
    majority = {"protocol": "majority", "num_classes": 7}
    return [("DIFC source", fer, "train", {}), ("DIFC target", ck, None, {}),
            ("GReFEL train", fp, "train", majority), ("GReFEL val", fp, "val", majority),
            ("GReFEL test", fp, "test", majority)]


def check_packages() -> list[str]:
    problems = []
    for dist, mods in IMPORTS.items():
        if not any(_importable(m) for m in mods):
            problems.append(f"package {dist}: none of {', '.join(mods)} imports with {sys.executable} "
                            f"(expected pyproject.toml's dependencies; carry it as a wheel)")
    return problems


def _importable(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):  # a parent package missing (lightning for lightning.fabric)
        return False


def check_weights() -> list[str]:
    try:
        from fairexpr.models.dlib_resnet import dlib_model_file

        f = dlib_model_file()
    except Exception as e:  # noqa: BLE001  (any failure is a problem to list, with its message)
        return [f"dlib weights: {e}"]
    print(f"[preflight] dlib weights: {f}")
    return []


def check_cuda() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return ["no CUDA device here (torch.cuda.is_available() is False; use run.sh --toy for the CPU check)"]
    print(f"[preflight] CUDA: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    return []


def check_data(data: Path) -> list[str]:
    from fairexpr.data.base import scan

    problems = []
    for what, spec, split, opts in datasets(data):
        try:
            res = scan(spec, split, **opts)
        except Exception as e:  # noqa: BLE001  (the adapter's own message names the file and what it expected)
            problems.append(f"{what}: {spec}{'@' + split if split else ''}: {e}")
            continue
        if not res.samples:
            problems.append(f"{what}: {spec}{'@' + split if split else ''}: no samples found")
            continue
        print(f"[preflight] {what}: {spec}{'@' + split if split else ''}: {len(res.samples)} images")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="the datasets folder (FAIREXPR_DATA); left out: not checked")
    ap.add_argument("--cuda", action="store_true", help="also require a CUDA device")
    a = ap.parse_args(argv)
    problems = check_packages()
    if not problems:  # the rest imports fairexpr and torch
        problems += check_weights()
        if a.cuda:
            problems += check_cuda()
        if a.data is not None:
            if not a.data.is_dir():
                problems.append(f"--data {a.data}: not a folder (expected the datasets folder, FAIREXPR_DATA)")
            else:
                problems += check_data(a.data)
    for p in problems:
        print(f"[preflight] {p}", file=sys.stderr)
    if problems:
        print(f"[preflight] {len(problems)} problem(s): nothing was started", file=sys.stderr)
        return 2
    print("[preflight] ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
