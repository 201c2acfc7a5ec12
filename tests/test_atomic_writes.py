"""Convention of docs/architecture.md: every file a user or a benchmark keeps is written atomically (temp file beside it,
then rename) with the user's umask — through ``fairexpr._io.atomic_write_bytes`` / ``atomic_write_text`` or a
helper built on them. This scans the package and the benchmarks for direct writes (``Path.write_text`` /
``write_bytes``, ``DataFrame.to_csv(path)``, ``savefig(path)``, ``np.save(path)``, ``Image.save(path)``,
``open(path, "w")``) so that a new one fails here with the file and line; the few that are not results are listed
below with the reason. Plus behaviour checks of the helpers and of writers this rule changed."""
from __future__ import annotations

import ast
import json
import os
import stat
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = [ROOT / "src" / "fairexpr", ROOT / "benchmarks"]

#: (file relative to the repo, call) -> why a direct write is right there
ALLOWED: dict[tuple[str, str], str] = {
    ("src/fairexpr/data/synthetic.py", "save"): "generates a throw-away image folder (tests, demo) in one go",
    ("benchmarks/_fer_worker.py", "write_text"): "runs in the fer package's own venv without fairexpr; scratch file "
                                                   "in the parent's temp folder",
    ("benchmarks/_fer_worker.py", "np.save"): "as above",
    ("benchmarks/_pyemotion_worker.py", "write_text"): "runs in PyEmotion's own venv without fairexpr; scratch file",
    ("benchmarks/_pyemotion_worker.py", "np.save"): "as above",
    ("benchmarks/compare_fer.py", "np.save"): "scratch arrays for the worker processes in a temp folder",
    ("benchmarks/cucn.py", "open"): "a cell's streamed training log",
    ("benchmarks/face_backbone.py", "open"): "a cell's streamed training log",
    ("benchmarks/precision_parity.py", "open"): "a cell's streamed training log",
    ("benchmarks/run_baselines.py", "open"): "a run's streamed training log",
    ("benchmarks/build_zoo.py", "open"): "a build step's streamed log",
    ("benchmarks/recipes.py", "open"): "a cell's lock file (flock) and its streamed training log",
}
BUFFERS = {"buf", "b", "f", "fh"}  # in-memory buffers / already-atomic temp handles


def _direct_writes(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        fn, args = node.func, node.args
        first = args[0] if args else None
        to_buffer = isinstance(first, ast.Name) and first.id in BUFFERS
        if isinstance(fn, ast.Name) and fn.id == "open":
            mode = args[1] if len(args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            if isinstance(mode, ast.Constant) and isinstance(mode.value, str) and set(mode.value) & set("wax"):
                found.append((node.lineno, "open"))
        elif isinstance(fn, ast.Attribute):
            if fn.attr in ("write_text", "write_bytes"):
                found.append((node.lineno, fn.attr))
            elif fn.attr == "to_csv" and (args or any(k.arg == "path_or_buf" for k in node.keywords)) and not to_buffer:
                found.append((node.lineno, "to_csv"))
            elif fn.attr == "savefig" and not to_buffer:
                found.append((node.lineno, "savefig"))
            elif fn.attr in ("save", "savez", "savez_compressed") and first is not None and not to_buffer:
                owner = fn.value.id if isinstance(fn.value, ast.Name) else ""
                found.append((node.lineno, "np.save" if owner == "np" else "save"))
    return found


def test_no_direct_writes_outside_the_allowed_list():
    bad, used = [], set()
    for base in SCANNED:
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for line, call in _direct_writes(path):
                if (rel, call) in ALLOWED:
                    used.add((rel, call))
                else:
                    bad.append(f"{rel}:{line}: {call}(...) writes in place; use fairexpr._io.atomic_write_bytes/_text")
    assert not bad, "\n".join(bad)
    assert not set(ALLOWED) - used, f"allowed entries that no longer match anything: {sorted(set(ALLOWED) - used)}"


def test_the_scan_finds_each_kind_of_direct_write(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from pathlib import Path\nimport numpy as np\n"
                   "Path('a').write_text('x')\nPath('a').write_bytes(b'x')\ndf.to_csv('a.csv')\nfig.savefig('a.png')\n"
                   "np.save('a.npy', x)\nim.save('a.jpg')\nopen('a', 'w')\nopen('a', mode='ab')\n"
                   "df.to_csv(index=False)\nfig.savefig(buf, format='png')\nnp.savez(buf, a=x)\nopen('a')\n")
    assert [c for _, c in _direct_writes(src)] == ["write_text", "write_bytes", "to_csv", "savefig", "np.save", "save",
                                                   "open", "open"]


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_atomic_write_text_utf8_umask_and_no_temp_left(tmp_path, umask_027):
    from fairexpr._io import atomic_write_text

    p = tmp_path / "sub" / "r.md"
    atomic_write_text(p, "Überraschung ± 1\n")
    assert p.read_bytes() == "Überraschung ± 1\n".encode("utf-8")
    assert _mode(p) == 0o640
    assert [q.name for q in p.parent.iterdir()] == ["r.md"]


def test_audit_writers_are_atomic_with_umask(tmp_path, umask_027):
    from fairexpr.audit import audit
    from fairexpr.data.synthetic import write_folder

    write_folder(tmp_path / "faces", {"train": [3] * 7, "test": [2] * 7}, size=24)
    rep = audit(f"folder:{tmp_path / 'faces'}", progress=False)
    out = tmp_path / "out"
    rep.to_json(out / "audit.json")
    rep.plot(out / "counts.png")
    rep.write_clean_manifest(out / "clean.csv")
    assert json.loads((out / "audit.json").read_text())["classes"]
    assert (out / "counts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "clean.csv").read_text().splitlines()[0] == "path,label,subject,split"
    assert {p.name: _mode(p) for p in out.iterdir()} == {"audit.json": 0o640, "counts.png": 0o640, "clean.csv": 0o640}


def test_cucn_report_files_are_atomic_with_umask(tmp_path, umask_027):
    from fairexpr.evaluation import cucn_tables

    runs = {}
    for name, (lo, hi) in {"plain": (0.1, 0.9), "weights": (0.4, 0.7)}.items():
        m = tmp_path / f"{name}.json"
        m.write_text(json.dumps({"accuracy": 0.6, "balanced_accuracy": 0.5, "per_class_accuracy": {"a": hi, "b": lo},
                                 "per_class_accuracy_min": lo, "per_class_accuracy_max": hi, "n": 10}))
        runs[name] = m
    out = cucn_tables.write_report(runs, tmp_path / "rep")
    for key in ("table2_csv", "table2_md", "per_class_csv", "fig4"):
        assert _mode(Path(out[key])) == 0o640, key
    assert "gap" in Path(out["table2_csv"]).read_text().splitlines()[0]
    assert not [p for p in (tmp_path / "rep").iterdir() if p.name.startswith(".")]
