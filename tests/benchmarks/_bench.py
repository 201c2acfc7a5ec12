"""Load a script under benchmarks/ as a module (they are scripts, not a package)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def load_bench(rel: str, name: str | None = None):
    """``load_bench("engine_speed")`` or ``load_bench("gpu/paired")``: the module, registered in ``sys.modules``."""
    name = name or rel.replace("/", "_")
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{rel}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
