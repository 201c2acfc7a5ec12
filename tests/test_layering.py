"""The one direction of data flow (docs/architecture.md, ../shared/DESIGN.md), checked on the source: every
``import`` of a fairexpr module — at the top of a file or inside a function — may only reach a layer below the
importing one (or its own package). A new upward import fails here with the file and line to fix."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fairexpr"

#: bottom to top; a unit may import units of a strictly lower layer, and itself
LAYERS: list[set[str]] = [
    {"_io", "errors", "labels", "ops"},
    {"config"},
    {"data", "zoo"},
    {"audit", "models"},
    {"checkpoint"},
    {"losses"},
    {"methods"},
    {"evaluation"},
    {"engine"},
    {"inference"},
    {"cli"},
    {"demo", "__init__"},  # the demo drives the CLI's commands; the package root re-exports the public API
]
RANK = {u: i for i, layer in enumerate(LAYERS) for u in layer}


def _unit(module: str) -> str:
    """``fairexpr.engine.loop`` -> ``engine``; ``fairexpr`` (the package itself) -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> tuple[str, str]:
    rel = path.relative_to(SRC.parent).with_suffix("")
    mod = ".".join(rel.parts)
    if path.name == "__init__.py":
        mod = mod[: -len(".__init__")]
        return mod, mod
    return mod, mod.rsplit(".", 1)[0]


def imports(path: Path) -> list[tuple[int, str]]:
    """Every fairexpr module ``path`` imports (absolute or relative, any nesting), with its line."""
    mod, pkg = _module_name(path)
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module:
                found.append((node.lineno, target))
            else:  # ``from . import x`` / ``from .. import checkpoint``: each name may be a module
                found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(ln, t) for ln, t in found if t == "fairexpr" or t.startswith("fairexpr.")]


def violations() -> list[str]:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        mod, _ = _module_name(path)
        src_unit = _unit(mod)
        for line, target in imports(path):
            dst_unit = _unit(target)
            if dst_unit == src_unit or dst_unit == "__version__":
                continue
            if dst_unit not in RANK:
                # ``from .. import __version__`` and similar names of the package root
                if (SRC / f"{dst_unit}.py").exists() or (SRC / dst_unit).is_dir():
                    bad.append(f"{path.relative_to(SRC.parent)}:{line}: {target} is in no layer of tests/test_layering.py")
                continue
            if src_unit not in RANK:
                bad.append(f"{path.relative_to(SRC.parent)}: module unit {src_unit!r} is in no layer of tests/test_layering.py")
                continue
            if RANK[dst_unit] >= RANK[src_unit]:
                bad.append(f"{path.relative_to(SRC.parent)}:{line}: {src_unit} (layer {RANK[src_unit]}) imports {target} "
                           f"(layer {RANK[dst_unit]}): against the data flow")
    return bad


def test_every_import_follows_the_data_flow():
    bad = violations()
    assert not bad, "\n".join(bad)


def test_every_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
             if (p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").exists())}
    assert units - set(RANK) == set(), f"give these a layer in tests/test_layering.py: {sorted(units - set(RANK))}"


@pytest.mark.parametrize("source, expect_bad", [
    ("from ..evaluation.metrics import confusion_scores\n", True),   # losses -> evaluation: upward
    ("from ..errors import ConfigError\n", False),                   # losses -> errors: downward
    ("def f():\n    from ..engine import fit\n", True),             # a lazy import counts too
    ("from .. import checkpoint as ck\n", False),                     # losses -> checkpoint: downward
    ("from .. import engine\n", True),                                # `from .. import unit`: upward
    ("import fairexpr.evaluation.metrics\n", True),                   # absolute imports count too
])
def test_the_checker_catches_an_upward_import(tmp_path, monkeypatch, source, expect_bad):
    # a fake package laid out like ours, with one losses module holding `source`
    pkg = tmp_path / "fairexpr"
    (pkg / "losses").mkdir(parents=True)
    for unit in ("errors", "config"):
        (pkg / f"{unit}.py").write_text("")
    for unit in ("evaluation", "engine", "checkpoint"):
        (pkg / unit).mkdir()
        (pkg / unit / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "losses" / "__init__.py").write_text("")
    (pkg / "losses" / "x.py").write_text(source)
    monkeypatch.setitem(globals(), "SRC", pkg)
    bad = [v for v in violations() if "losses/x.py" in v]
    assert bool(bad) == expect_bad, bad
