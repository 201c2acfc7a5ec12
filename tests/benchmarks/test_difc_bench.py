"""Sharding of benchmarks/difc.py: every cell in exactly one shard, and the shards balanced for any grid."""
from __future__ import annotations

import importlib.util
import itertools
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("difc_bench", ROOT / "benchmarks" / "difc.py")
difc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(difc)


@pytest.mark.parametrize("methods,losses,n", [(["mcd", "dann"], ["ce", "di", "difc"], 2), (["mcd"], ["difc"], 2),
                                              (["mcd"], ["di", "difc"], 2), (["mcd", "dann"], ["difc"], 3)])
def test_shards_cover_every_cell_once_and_balance(methods, losses, n):
    seeds, targets = [0, 1, 2], [0, 1]
    cells = [(s, t, m, l) for s in seeds for t in targets for m in methods for l in losses]
    per_target = len(methods) * len(losses)
    shard = {c: difc.shard_of(k, c[1], per_target, n) for k, c in enumerate(cells)}
    sizes = Counter(shard.values())
    assert set(sizes) == set(range(n)) and max(sizes.values()) - min(sizes.values()) <= 1
    # each (method, target) kind is spread over the shards as evenly as its count allows
    for m, t in itertools.product(methods, targets):
        kind = Counter(shard[c] for c in cells if c[2] == m and c[1] == t)
        total = sum(kind.values())
        assert max(kind.values()) - (total // n) <= total % n + 1, (m, t, kind)


def test_single_cell_grid_uses_both_shards():
    # the grid that used to land entirely in shard 0: one method x one loss, 3 seeds x 2 targets
    got = [difc.shard_of(k, k % 2, 1, 2) for k in range(6)]
    assert got == [0, 1, 0, 1, 0, 1]
    # the original 12-cell-per-seed grid keeps its pattern (results already on record were produced with it)
    assert [difc.shard_of(k, k // 6 % 2, 6, 2) for k in range(12)] == [(k + k // 6 % 2) % 2 for k in range(12)]
