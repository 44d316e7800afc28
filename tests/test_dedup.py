"""Near-duplicate groups through the collection's vector index agree with a brute-force reference."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components

from encoderkit.store import Collection
from encoderkit.tasks.dedup import find_duplicates
from store_fakes import FakeEncoder


def reference_groups(X: np.ndarray, ids: list[str], threshold: float) -> set[frozenset]:
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    A = (Xn @ Xn.T) >= threshold
    np.fill_diagonal(A, False)
    _, labels = connected_components(A, directed=False)
    groups = {}
    for i, lab in enumerate(labels):
        groups.setdefault(lab, set()).add(ids[i])
    return {frozenset(g) for g in groups.values() if len(g) > 1}


@pytest.mark.parametrize("index", ["Flat", "HNSW32"])
def test_dedup_matches_brute_force(tmp_path, index):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((600, 32)).astype(np.float32)
    parts = [base]
    for size, src in ((2, 0), (3, 1), (40, 2)):  # the group of 40 is bigger than the 16 neighbours first asked
        parts.append(base[src] + 0.02 * rng.standard_normal((size - 1, 32)).astype(np.float32))
    X = np.concatenate(parts)
    ids = [f"v{i}" for i in range(len(X))]
    col = Collection.open(tmp_path / index, FakeEncoder(), index=index)
    col.add([f"text {i}" for i in range(len(X))], ids=ids, vectors=X)
    groups = find_duplicates(col, threshold=0.95, neighbors=16)
    ref = reference_groups(X, ids, 0.95)
    assert {frozenset(g["ids"]) for g in groups} == ref
    assert [g["size"] for g in groups] == [40, 3, 2]
    assert all(g["min_cosine"] >= 0.9 for g in groups)
    strict = find_duplicates(col, threshold=0.9999)
    assert {frozenset(g["ids"]) for g in strict} == reference_groups(X, ids, 0.9999)
    assert sum(g["size"] for g in strict) < 45
    with pytest.raises(ValueError, match="threshold"):
        find_duplicates(col, threshold=1.5)
    col.close()


def test_dedup_small_and_empty(tmp_path):
    col = Collection.open(tmp_path / "s", FakeEncoder())
    assert find_duplicates(col) == []
    col.add(["the same words here", "the same words here!", "something else entirely"], ids=["a", "b", "c"])
    assert [g["ids"] for g in find_duplicates(col, threshold=0.99)] == [["a", "b"]]
    col.close()
