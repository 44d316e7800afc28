"""PLAID-style late search (store/plaid.py): centroids over the token vectors propose candidates, an approximate
centroid MaxSim keeps the best, exact MaxSim re-scores them. Checked on random clustered token vectors against
brute-force MaxSim in numpy: the same top-k when every centroid is probed, high overlap at the defaults; writes
(inserts, deletes, upserts) reflected; `where` filters; the saved cache reloaded, a stale one rebuilt; check()."""
from __future__ import annotations

import json

import numpy as np
import pytest

from encoderkit.store import Collection
from encoderkit.store.late_index import LATE_INDEX_NAME
from encoderkit.store.plaid import RETRAIN_GROWTH, PlaidIndex, check_plaid, n_centroids
from pg_server import collection_url, pg_url, unique_name  # noqa: F401  (pg_url: the session's server)
from store_fakes import FakeSparseLateEncoder

D, K, N = 32, 64, 500


def _unit(X):
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


class Clustered:
    """Token vectors drawn around 40 random centres (a document mixes a few topics), queries likewise."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.centres = _unit(self.rng.standard_normal((40, D)))

    def doc(self, n: int | None = None) -> np.ndarray:
        n = int(n or self.rng.integers(4, 40))
        topics = self.rng.choice(40, size=3, replace=False)
        return _unit(self.centres[self.rng.choice(topics, n)] + 0.1 * self.rng.standard_normal((n, D)))

    def query(self) -> np.ndarray:
        return self.doc(8)


def brute(Q, docs: dict[str, np.ndarray], k: int) -> list[str]:
    s = {i: float((Q @ X.T).max(axis=1).sum()) for i, X in docs.items()}
    return sorted(s, key=lambda i: (-s[i], i))[:k]


@pytest.fixture
def gen():
    return Clustered()


def _make(path, gen, n=N, factory=f"PLAID{K}", metas=None):
    docs = {f"d{i}": gen.doc() for i in range(n)}
    c = Collection.open(path, FakeSparseLateEncoder(late_dim=D), kinds=["late"], late_index=factory)
    c.add([f"t{i}" for i in range(n)], ids=list(docs), multivectors=list(docs.values()), metadatas=metas)
    return c, docs


def _ids(hits):
    return [h.id for h in hits]


def test_every_centroid_probed_is_exact_and_defaults_overlap(tmp_path, gen):
    c, docs = _make(tmp_path / "c", gen)
    idx = c._sync_late()
    assert idx.is_trained and idx.K == K and len(idx.doc_ids()) == N
    overlap = []
    for _ in range(20):
        Q = gen.query()
        ref = brute(Q, docs, 10)
        # every centroid probed: all documents scored by centroids, the best 100 of 500 re-scored exactly
        hits = c.search("q", k=10, mode="late", multivector=Q, late_nprobe=K, late_candidates=100)
        assert _ids(hits) == ref
        exact = {i: float((Q @ docs[i].T).max(axis=1).sum()) for i in _ids(hits)}
        assert np.allclose([h.score for h in hits], [exact[i] for i in _ids(hits)], atol=1e-5)
        got = _ids(c.search("q", k=10, mode="late", multivector=Q, late_nprobe=8, late_candidates=20))
        assert all(i in docs for i in got) and len(got) == 10
        overlap.append(len(set(got) & set(ref)) / 10)
    assert np.mean(overlap) >= 0.8, overlap  # 8 of 64 centroids per query token, 20 of 500 documents re-scored
    # fewer re-scored documents than k asked: still k results (never fewer than k are re-scored)
    assert len(c.search("q", k=10, mode="late", multivector=gen.query(), late_candidates=3)) == 10
    c.close()


def test_approximate_scores_are_centroid_maxsim(gen):
    idx = PlaidIndex(D, "PLAID16")
    docs = [gen.doc() for _ in range(300)]
    idx.train(np.concatenate(docs), sum(map(len, docs)))
    idx.add(list(range(300)), docs)
    Q = gen.query()
    S = Q @ idx.C.T
    codes = [set(idx.assign(X).tolist()) for X in docs]
    pos, got, _ = idx.centroid_scores(Q, 16)  # every centroid probed: the full centroid MaxSim of every document
    assert pos.tolist() == list(range(300))
    assert np.allclose(got, [S[:, sorted(c)].max(axis=1).sum() for c in codes], atol=1e-5)
    for nprobe in (1, 3):  # pruned: per query token, the best probed centroid the document holds, else the next best
        top = np.argsort(-S, axis=1)
        want = {}
        for d, c in enumerate(codes):
            per = [max([S[i, j] for j in top[i, :nprobe] if j in c], default=None) for i in range(len(Q))]
            if any(v is not None for v in per):
                want[d] = sum(S[i, top[i, nprobe]] if v is None else v for i, v in enumerate(per))
        pos, got, floor = idx.centroid_scores(Q, nprobe)
        assert pos.tolist() == sorted(want) and np.allclose(got, [want[d] for d in pos], atol=1e-5)
        assert np.isclose(floor, S[np.arange(len(Q)), top[:, nprobe]].sum())
    rids, proposed = idx.candidates(Q, 300, nprobe=16)
    assert proposed == 300 and sorted(rids.tolist()) == list(range(300))
    full = [S[:, sorted(c)].max(axis=1).sum() for c in codes]
    assert rids[0] == int(np.argmax(full))


def test_writes_are_reflected(tmp_path, gen):
    c, docs = _make(tmp_path / "c", gen)
    Q = gen.query()
    c.search("q", mode="late", multivector=Q)  # cache loaded: the writes below update it in place
    gone = _ids(c.search("q", k=5, mode="late", multivector=Q, late_nprobe=K))
    c.delete(gone)
    for i in gone:
        del docs[i]
    new = {f"n{i}": gen.doc() for i in range(40)}
    new["n0"] = Q.copy()  # the query itself: the best MaxSim of all
    c.add(list(new), ids=list(new), multivectors=list(new.values()))
    docs.update(new)
    docs["d7"] = _unit(Q[::-1] + 0.01)
    c.upsert(["d7"], ids=["d7"], multivectors=[docs["d7"]])
    got = _ids(c.search("q", k=10, mode="late", multivector=Q, late_nprobe=K))
    assert got == brute(Q, docs, 10) and got[0] == "n0" and not set(gone) & set(got)
    assert c.check()["ok"]
    c.close()
    c = Collection.open(tmp_path / "c", create=False, encoder=FakeSparseLateEncoder(late_dim=D))
    assert _ids(c.search("q", k=10, mode="late", multivector=Q, late_nprobe=K)) == got
    c.close()


def test_where_filters_never_leak(tmp_path, gen):
    metas = [{"lang": "de" if i % 7 == 0 else "en", "n": i} for i in range(N)]
    c, docs = _make(tmp_path / "c", gen, metas=metas)
    keep = {f"d{i}" for i in range(N) if i % 7 == 0}
    for _ in range(10):
        Q = gen.query()
        hits = c.search("q", k=10, mode="late", multivector=Q, where={"lang": "de"})
        assert set(_ids(hits)) <= keep and len(hits) == 10
        assert _ids(c.search("q", k=10, mode="late", multivector=Q, where={"lang": "de"}, late_nprobe=K)) == \
            brute(Q, {i: docs[i] for i in keep}, 10)
    assert _ids(c.search("q", k=3, mode="late", multivector=gen.query(), where={"n": 5})) == ["d5"]
    assert c.search("q", k=3, mode="late", multivector=gen.query(), where={"lang": "fr"}) == []
    c.close()


def test_saved_cache_reloaded_and_stale_one_rebuilt(tmp_path, gen, monkeypatch):
    c, docs = _make(tmp_path / "c", gen)
    Q = gen.query()
    ref = _ids(c.search("q", k=10, mode="late", multivector=Q))
    c.close()
    side = json.loads((tmp_path / "c" / "late.json").read_text())
    assert side["factory"] == f"PLAID{K}" and side["K"] == K and side["documents"] == N
    trains = []
    real = PlaidIndex.train
    monkeypatch.setattr(PlaidIndex, "train", lambda self, *a: trains.append(1) or real(self, *a))
    c = Collection.open(tmp_path / "c", FakeSparseLateEncoder(late_dim=D))
    assert _ids(c.search("q", k=10, mode="late", multivector=Q)) == ref and trains == []  # loaded, not rebuilt
    c.add(["x"], ids=["x"], multivectors=[gen.doc()])
    c.store.close()  # killed before the cache was saved: on disk it reflects the previous generation
    c = Collection.open(tmp_path / "c", FakeSparseLateEncoder(late_dim=D))
    assert c.check()["ok"] and trains == [1]  # stale cache: retrained from SQLite
    assert "x" in _ids(c.search("q", k=N + 1, mode="late", multivector=Q, late_candidates=N + 1))
    c.close()
    # a damaged cache file (size differs from its sidecar) is not trusted either
    p = tmp_path / "c" / LATE_INDEX_NAME
    p.write_bytes(p.read_bytes()[:-10])
    c = Collection.open(tmp_path / "c", FakeSparseLateEncoder(late_dim=D))
    assert c.check()["ok"] and trains == [1, 1]
    c.close()


def test_check_finds_wrong_codes(tmp_path, gen):
    c, _ = _make(tmp_path / "c", gen)
    idx = c._sync_late()
    assert c.check()["ok"]
    idx.codes[idx.offsets[3]:idx.offsets[4]] = (idx.codes[idx.offsets[3]:idx.offsets[4]] + 1) % K
    idx.codes[idx.offsets[:-1]] = (idx.codes[idx.offsets[:-1]] + 1) % K  # every document's first code shifted
    problems = c.check()["problems"]
    assert any("PLAID codes of" in p for p in problems), problems
    idx.remove([int(idx.rids[0])])
    assert any("PLAID cache disagrees" in p for p in c.check()["problems"])
    c._late_index = None
    c.close()


def test_small_collection_untrained_is_exact_then_trains(tmp_path, gen):
    c, docs = _make(tmp_path / "c", gen, n=20, factory="PLAID")  # < 4,096 tokens: no centroids
    Q = gen.query()
    assert not c._sync_late().is_trained and c.check()["ok"]
    assert _ids(c.search("q", k=5, mode="late", multivector=Q)) == brute(Q, docs, 5)
    more = {f"m{i}": gen.doc(30) for i in range(200)}
    c.add(list(more), ids=list(more), multivectors=list(more.values()))
    docs.update(more)
    idx = c._sync_late()
    assert idx.is_trained and idx.K == n_centroids("PLAID", sum(map(len, docs.values())))
    assert _ids(c.search("q", k=5, mode="late", multivector=Q, late_nprobe=1 << 20)) == brute(Q, docs, 5)
    assert c.check()["ok"]
    c.close()


def test_factory_strings(tmp_path):
    check_plaid("PLAID")
    check_plaid("PLAID256")
    for bad in ("PLAIDx", "PLAID1", "plaid"):
        with pytest.raises(ValueError):
            check_plaid(bad)
    with pytest.raises(ValueError, match="PLAID"):
        Collection.open(tmp_path / "bad", FakeSparseLateEncoder(late_dim=D), kinds=["late"], late_index="PLAID1")
    assert not (tmp_path / "bad").exists()
    assert n_centroids("PLAID", 1_270_000) == 4096 and n_centroids("PLAID", 100) == 16
    assert n_centroids("PLAID", 4096) == 64  # 4 sqrt(tokens) = 256, but k-means wants 39 tokens per centroid
    assert n_centroids("PLAID512", 10) == 512


def test_default_late_index_per_backend(tmp_path, pg_url):
    """A new embedded collection searches late through PLAID; PostgreSQL keeps its own late path ("Flat" exact
    MaxSim, or pgvector HNSW over tokens) and refuses PLAID by name."""
    c = Collection.open(tmp_path / "c", FakeSparseLateEncoder(late_dim=D), kinds=["late"])
    assert c.meta["late_index"] == "PLAID"
    c.close()
    url = collection_url(pg_url, unique_name())
    p = Collection.open(url, FakeSparseLateEncoder(late_dim=D), kinds=["late"])
    assert p.meta["late_index"] == "Flat"
    p.close()
    with pytest.raises(ValueError, match="PLAID"):
        Collection.open(collection_url(pg_url, unique_name()), FakeSparseLateEncoder(late_dim=D), kinds=["late"],
                        late_index="PLAID")


def test_centroids_retrained_when_the_collection_grows(tmp_path, gen):
    c, docs = _make(tmp_path / "c", gen, n=200)
    first = c._sync_late()
    t0 = first.trained_tokens
    assert t0 == sum(map(len, docs.values())) == first.n_tokens
    c.add(["a"], ids=["a"], multivectors=[gen.doc()])
    assert c._sync_late() is first and first.trained_tokens == t0  # a small write: codes added in place
    more = {f"m{i}": gen.doc() for i in range(1000)}
    c.add(list(more), ids=list(more), multivectors=list(more.values()))
    again = c._sync_late()
    assert again is not first and again.trained_tokens > RETRAIN_GROWTH * t0 and c.check()["ok"]
    c.close()
