"""Sparse (inverted index / sparsevec) and late-interaction (token vectors, MaxSim) collections, and hybrid fusion
of any of vector / keyword / sparse / late, on both backends: the embedded store (SQLite + FAISS) and PostgreSQL
+ pgvector. Scores are checked against numpy references computed from the encoder's own outputs; writes are
atomic with their document; old (dense-only) collections keep opening. The encoder is tests/store_fakes.py's
FakeSparseLateEncoder, which follows Encoder's sparse / multi-vector contract."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from encoderkit.store import Collection
from encoderkit.store.fusion import rrf, weighted
from encoderkit.store.late_index import LATE_INDEX_NAME, maxsim
from encoderkit.store.where import matches
from pg_server import collection_url, pg_url, unique_name  # noqa: F401  (pg_url: the session's server)
from store_fakes import FakeEncoder, FakeSparseLateEncoder
from test_store_collection import corpus

TESTS = Path(__file__).resolve().parent
QUERIES = ["cat beach summer", "python rust code", "coffee tea rain storm", "piano"]


@pytest.fixture(params=["sqlite", "pgvector"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def loc(backend, tmp_path, request):
    if backend == "sqlite":
        return lambda name: tmp_path / name
    base, prefix = request.getfixturevalue("pg_url"), unique_name()
    return lambda name: collection_url(base, f"{prefix}_{re.sub(r'[^a-z0-9_]', '_', name.lower())}")


@pytest.fixture
def data():
    return corpus(300)


@pytest.fixture
def col(loc, data):
    c = Collection.open(loc("c"), FakeSparseLateEncoder())
    texts, ids, metas = data
    c.add(texts, ids=ids, metadatas=metas)
    yield c
    c.close()


def _unit(X):
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _ref_sparse(enc, texts, ids, query, k, keep=None):
    D = enc.encode_document(texts, output="sparse")
    q = enc.encode_query([query], output="sparse")
    s = np.asarray((D @ q.T).todense()).ravel()
    order = sorted((i for i in range(len(ids)) if s[i] > 0 and (keep is None or keep[i])), key=lambda i: (-s[i], i))
    return [ids[i] for i in order[:k]], [s[i] for i in order[:k]]


def _ref_late(enc, texts, ids, query, k, keep=None):
    Q = _unit(enc.encode_query([query], output="multivector")[0])
    s = np.array([maxsim(Q, _unit(D)) for D in enc.encode_document(texts, output="multivector")])
    order = sorted((i for i in range(len(ids)) if keep is None or keep[i]), key=lambda i: (-s[i], i))
    return [ids[i] for i in order[:k]], [s[i] for i in order[:k]]


# ---------------------------------------------------------------------- kinds
def test_kinds_recorded_and_old_collections_open(loc):
    c = Collection.open(loc("multi"), FakeSparseLateEncoder())
    assert c.kinds == ("dense", "sparse", "late") and c.modes() == ["vector", "keyword", "sparse", "late", "hybrid"]
    assert c.vocab == 997 and c.late_dim == 16 and c.info()["kinds"] == ["dense", "sparse", "late"]
    c.close()
    c = Collection.open(loc("multi"))  # reopened without an encoder: kinds come from its meta
    assert c.kinds == ("dense", "sparse", "late")
    c.close()
    only = Collection.open(loc("sparse_only"), FakeSparseLateEncoder(), kinds=["dense", "sparse"])
    assert only.kinds == ("dense", "sparse") and "late" not in only.modes()
    only.add(["a cat"], ids=["a"])
    with pytest.raises(ValueError, match="holds no late vectors.*multi-vector output"):
        only.search("cat", mode="late")
    only.close()
    old = Collection.open(loc("dense"), FakeEncoder())  # an encoder with no sparse / multi-vector output
    assert old.kinds == ("dense",) and old.modes() == ["vector", "keyword", "hybrid"]
    old.add(["a cat"], ids=["a"])
    with pytest.raises(ValueError, match="holds no sparse vectors"):
        old.search("cat", mode="sparse")
    assert [h.id for h in old.search("cat", mode="hybrid")] == ["a"]
    with pytest.raises(ValueError, match="has no sparse output"):
        Collection.open(loc("bad"), FakeEncoder(), kinds=["sparse"])
    old.close()


def test_collection_without_kinds_meta_opens_as_dense(tmp_path):
    """A collection written before kinds existed (no 'kinds' meta row) opens, searches and takes writes."""
    c = Collection.open(tmp_path / "old", FakeEncoder())
    c.add(["sun sea", "snow city"], ids=["a", "b"])
    c.store.conn.execute("DELETE FROM meta WHERE key = 'kinds'")
    c.close()
    c = Collection.open(tmp_path / "old", FakeEncoder())
    assert c.kinds == ("dense",) and c.search("sun", k=1, mode="hybrid")[0].id == "a"
    assert "sparse" not in {r[0] for r in c.store.conn.execute("SELECT name FROM sqlite_master")}
    c.close()


# ---------------------------------------------------------------------- sparse
def test_sparse_search_matches_numpy(col, data):
    texts, ids, metas = data
    enc = col.encoder
    for q in QUERIES:
        ref_ids, ref_s = _ref_sparse(enc, texts, ids, q, 10)
        hits = col.search(q, k=10, mode="sparse")
        assert [h.id for h in hits] == ref_ids
        assert np.allclose([h.score for h in hits], ref_s, atol=1e-5)
        assert all(set(h.scores) == {"sparse"} for h in hits)
    where = {"lang": "en", "year": {"$gte": 2010}}
    keep = [matches(where, m) for m in metas]
    for q in QUERIES:
        assert [h.id for h in col.search(q, k=7, mode="sparse", where=where)] == \
            _ref_sparse(enc, texts, ids, q, 7, keep)[0]
    assert col.search("zzzunknownword", mode="sparse") == []
    # the stored vectors come back as they were encoded
    got = col.sparse_vectors(["d3", "missing", "d7"])
    ref = enc.encode_document([texts[3], texts[7]], output="sparse")
    assert got.shape == (3, 997) and got[1].nnz == 0
    assert np.allclose(got[[0, 2]].toarray(), ref.toarray(), atol=1e-6)


def test_sparse_query_given_as_dict(col, data):
    texts, ids, _ = data
    enc = col.encoder
    q = enc.encode_query(["cat beach"], output="sparse")
    as_dict = {int(i): float(v) for i, v in zip(q.indices, q.data)}
    a = [h.id for h in col.search("ignored text", k=5, mode="sparse", sparse=as_dict)]
    assert a == [h.id for h in col.search("cat beach", k=5, mode="sparse")]


# ---------------------------------------------------------------------- late interaction
def test_late_search_matches_exact_maxsim(col, data):
    texts, ids, metas = data
    enc = col.encoder
    for q in QUERIES:
        ref_ids, ref_s = _ref_late(enc, texts, ids, q, 300)
        every = dict(zip(ref_ids, ref_s))
        # enough token neighbours per query vector to reach every document: the exact MaxSim ranking
        hits = col.search(q, k=10, mode="late", late_candidates=300)
        assert np.allclose([h.score for h in hits], ref_s[:10], atol=1e-5), q
        # the default candidate depth: each hit's score is its exact MaxSim, and most of the true top 10 is found
        hits = col.search(q, k=10, mode="late")
        assert np.allclose([h.score for h in hits], [every[h.id] for h in hits], atol=1e-5)
        assert len({h.id for h in hits} & set(ref_ids[:10])) >= 6, q
    where = {"$or": [{"lang": "de"}, {"flag": True}]}
    keep = [matches(where, m) for m in metas]
    for q in QUERIES:
        hits = col.search(q, k=5, mode="late", where=where)
        assert all(keep[ids.index(h.id)] for h in hits)
        assert np.allclose([h.score for h in hits], _ref_late(enc, texts, ids, q, 5, keep)[1], atol=1e-5)
    mv = col.multivectors(["d4", "nope"])
    assert mv[1] is None and np.allclose(mv[0], _unit(enc.encode_document([texts[4]], output="multivector")[0]))


def test_late_candidates_through_hnsw(loc, data):
    """The candidate path (HNSW over token vectors: FAISS for the embedded store, pgvector for PostgreSQL) finds
    the exact MaxSim top 5 on this corpus when asked for enough token neighbours."""
    texts, ids, _ = data
    enc = FakeSparseLateEncoder()
    c = Collection.open(loc("h"), enc, late_index="HNSW16")
    c.add(texts, ids=ids)
    for q in QUERIES:
        ref_ids, ref_s = _ref_late(enc, texts, ids, q, 5)
        hits = c.search(q, k=5, mode="late", late_candidates=300)
        assert np.allclose([h.score for h in hits], ref_s, atol=1e-5), q
    c.close()


def test_token_index_cache_rebuilds_and_follows_writes(tmp_path, data):
    texts, ids, _ = data
    enc = FakeSparseLateEncoder()
    c = Collection.open(tmp_path / "c", enc)
    c.add(texts[:200], ids=ids[:200])
    c.search("cat", mode="late")
    c.close()
    assert (tmp_path / "c" / LATE_INDEX_NAME).exists()
    c = Collection.open(tmp_path / "c", enc)
    c.upsert(["zebra cat"], ids=["d0"])  # writes without the cache loaded, then with it
    c.search("cat", mode="late")
    c.add(texts[200:], ids=ids[200:])
    c.delete(["d1", "d2"])
    assert c.check()["ok"]
    top = c.search("zebra cat", k=3, mode="late")
    assert top[0].id == "d0" and "d1" not in [h.id for h in c.search("cat", k=300, mode="late")]
    c.store.close()  # killed before saving: the saved cache is stale
    c = Collection.open(tmp_path / "c", enc)
    assert c.check()["ok"] and [h.id for h in c.search("zebra cat", k=3, mode="late")] == [h.id for h in top]
    c.close()


# ---------------------------------------------------------------------- writes are atomic and complete
def test_upsert_delete_keep_kinds_in_step(col, data):
    col.upsert(["xylophone marimba"], ids=["d5"])
    assert col.search("xylophone marimba", k=1, mode="sparse")[0].id == "d5"
    assert col.search("xylophone marimba", k=1, mode="late")[0].id == "d5"
    assert col.delete(where={"lang": "fr"}) > 0
    left = {h.id for h in col.search("cat dog sun beach", k=300, mode="sparse")}
    assert left and all(col.get(i).metadata.get("lang") != "fr" for i in left)
    assert all(h.metadata.get("lang") != "fr" for h in col.search("cat", k=300, mode="late"))
    assert col.check()["ok"]


def test_failed_write_leaves_nothing(col, monkeypatch):
    n = col.count()

    def boom(rids, extra):
        raise RuntimeError("disk full, say")

    monkeypatch.setattr(col, "_write_kinds", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        col.add(["new cat doc"], ids=["new"])
    monkeypatch.undo()
    assert col.count() == n and col.get("new") is None and col.check()["ok"]
    with pytest.raises(ValueError, match="NaN"):
        col.add(["x"], ids=["x"], sparse=[{3: float("nan")}])
    with pytest.raises(ValueError, match="outside the vocabulary 0..996"):
        col.add(["x"], ids=["x"], sparse=[{5000: 1.0}])
    with pytest.raises(ValueError, match=r"expected \(tokens, 16\)"):
        col.add(["x"], ids=["x"], multivectors=[np.ones((3, 8), np.float32)])
    assert col.count() == n and col.get("x") is None
    ids = col.add(["given vectors"], ids=["g"], sparse=[{1: 2.0}], multivectors=[np.ones((2, 16), np.float32)])
    assert ids == ["g"] and col.search("q", k=1, mode="sparse", sparse={1: 1.0})[0].id == "g"


CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from store_fakes import FakeSparseLateEncoder
from encoderkit.store import Collection
col = Collection.open({col!r}, FakeSparseLateEncoder())
for b in range(1000):
    ids = [f"doc{{b}}_{{i}}" for i in range(20)]
    col.upsert([f"sun sea river snow code tea number {{b}} {{i}}" for i in range(20)], ids=ids)
    if b % 3 == 0:
        col.search("sun", mode="late")  # keeps the token index loaded, updated and (on flush) saved
        col.flush()
    print("COMMIT " + json.dumps(ids), flush=True)
"""


def test_sigkill_during_writes_sqlite(tmp_path):
    """A writer with sparse and token vectors killed mid-run: what it committed is there, searchable every way,
    and the check passes (the saved token index is stale or current, never trusted wrongly)."""
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(TESTS), col=str(tmp_path / "c")))
    committed: set[str] = set()
    for attempt, after in enumerate((5, 9)):
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = 0
        for line in proc.stdout:
            if line.startswith("COMMIT "):
                committed.update(json.loads(line[7:]))
                seen += 1
                if seen == after:
                    time.sleep(0.01 * attempt)
                    os.kill(proc.pid, signal.SIGKILL)
                    break
        proc.wait(timeout=60)
        c = Collection.open(tmp_path / "c", FakeSparseLateEncoder())
        assert c.check()["ok"]
        assert all(h is not None for h in c.get(sorted(committed)))
        some = sorted(committed)[-1]
        for mode in ("sparse", "late", "hybrid"):
            assert some in [h.id for h in c.search(c.get(some).text, k=3, mode=mode)], mode
        c.store.close()


# ---------------------------------------------------------------------- hybrid fusion
def test_hybrid_fuses_any_lists_with_weights(col):
    q = "cat beach summer rain"
    lists = {m: [(h.id, h.score) for h in col.search(q, k=100, mode=m)] for m in ("vector", "keyword", "sparse", "late")}
    got = col.search(q, k=10, mode="hybrid", modes=["sparse", "late"], candidates=100)
    ref = rrf([lists["sparse"], lists["late"]], k=60)
    assert [h.id for h in got] == [d for d, _ in ref[:10]]
    assert np.allclose([h.score for h in got], [s for _, s in ref[:10]])
    assert set(got[0].scores) >= {"sparse", "late", "fused"}
    w = {"vector": 0.2, "keyword": 0.3, "sparse": 0.1, "late": 0.4}
    got = col.search(q, k=10, mode="hybrid", fusion="weighted", weights=w, candidates=100)
    ref = weighted([lists[m] for m in w], list(w.values()))
    assert np.allclose([h.score for h in got], [s for _, s in ref[:10]])
    got = col.search(q, k=10, mode="hybrid", modes=["vector", "late"], weights=[2.0, 1.0], candidates=100)
    assert [h.id for h in got] == [d for d, _ in rrf([lists["vector"], lists["late"]], weights=[2.0, 1.0])[:10]]
    default = col.search(q, k=5, mode="hybrid")  # a collection's default hybrid fuses every list it holds
    assert set(default[0].scores) == {"vector", "keyword", "sparse", "late", "fused"}
    # the old two-list behaviour: alpha for weighted vector + keyword
    a = col.search(q, k=10, mode="hybrid", modes=["vector", "keyword"], fusion="weighted", alpha=0.7, candidates=100)
    ref = weighted([lists["vector"], lists["keyword"]], [0.7, 0.3])
    assert np.allclose([h.score for h in a], [s for _, s in ref[:10]])
    with pytest.raises(ValueError, match="weights name"):
        col.search(q, mode="hybrid", modes=["vector", "late"], weights={"sparse": 1})
    with pytest.raises(ValueError, match="2 weights for 3"):
        col.search(q, mode="hybrid", modes=["vector", "late", "sparse"], weights=[1, 2])
    with pytest.raises(ValueError, match="hybrid fuses modes among"):
        col.search(q, mode="hybrid", modes=["vector", "colbert"])
    with pytest.raises(ValueError, match=">= 0"):
        col.search(q, mode="hybrid", weights=[1, -1, 1, 1])
    hits = col.search(q, k=5, mode="hybrid", where={"lang": "de"})
    assert hits and all(h.metadata["lang"] == "de" for h in hits)


# ---------------------------------------------------------------------- collections without dense vectors
class _SpladeLike(FakeSparseLateEncoder):
    sparse, late = "splade", None  # an Encoder of a SparseEncoder folder says so


class _ColbertLike(FakeSparseLateEncoder):
    sparse, late = None, "colbert"

    def encode(self, texts, output: str = "pooled", **kw):
        if output == "pooled":
            raise ValueError("a multi-vector model gives token vectors, not one pooled vector")
        return super().encode(texts, output=output, **kw)


def test_sparse_only_and_late_only_collections(loc, data):
    texts, ids, metas = data
    sp = Collection.open(loc("splade"), _SpladeLike())
    assert sp.kinds == ("sparse",) and sp.modes() == ["keyword", "sparse", "hybrid"] and sp.dim == 1
    sp.add(texts, ids=ids, metadatas=metas)
    assert [h.id for h in sp.search("cat beach", k=5, mode="sparse")] == \
        _ref_sparse(sp.encoder, texts, ids, "cat beach", 5)[0]
    assert set(sp.search("cat beach", k=3, mode="hybrid")[0].scores) == {"keyword", "sparse", "fused"}
    with pytest.raises(ValueError, match="holds no dense vectors.*'keyword' or 'sparse'"):
        sp.search("cat", mode="vector")
    assert sp.check()["ok"]
    sp.close()
    sp = Collection.open(loc("splade"), _SpladeLike())  # reopens: no dim mismatch with the model's vocab size
    assert sp.count() == 300
    sp.close()
    cb = Collection.open(loc("colbert"), _ColbertLike(), late_index="HNSW16")
    assert cb.kinds == ("late",) and cb.modes() == ["keyword", "late", "hybrid"]
    cb.add(texts[:50], ids=ids[:50])
    assert cb.search(texts[7], k=1, mode="late")[0].id == "d7" and cb.check()["ok"]
    cb.close()


def test_real_encoder_token_vectors_late(tmp_path):
    """A plain model (MiniLM) keeps dense only by default and has no late output; with `token_late` set, its
    normalized token vectors (Encoder.encode(output="multivector")) are stored too, and late search ranks by MaxSim."""
    import encoderkit

    enc = encoderkit.load("all-MiniLM-L6-v2")
    assert Collection.open(tmp_path / "plain", enc).kinds == ("dense",)
    with pytest.raises(ValueError, match="has no late output.*token_late"):
        Collection.open(tmp_path / "refused", enc, kinds=["dense", "late"])
    enc.token_late = True
    c = Collection.open(tmp_path / "late", enc)
    assert c.kinds == ("dense", "late")
    assert c.late_dim == 384
    docs = ["The cat sat on the mat.", "Stock markets fell sharply on Monday.", "Arctic terns migrate far."]
    c.add(docs, ids=["cat", "stock", "tern"])
    hits = c.search("where did the cat sit?", k=3, mode="late")
    Q = enc.encode_query(["where did the cat sit?"], output="multivector")[0]
    D = enc.encode_document(docs, output="multivector")
    from encoderkit.tasks.maxsim import maxsim as encoder_maxsim  # the encoder side's MaxSim, as the oracle

    ref = sorted(((encoder_maxsim(Q, d), i) for i, d in zip(["cat", "stock", "tern"], D)), reverse=True)
    assert [h.id for h in hits] == [i for _, i in ref] and hits[0].id == "cat"
    assert np.allclose([h.score for h in hits], [s for s, _ in ref], atol=1e-4)
    c.close()


def test_pg_drop_takes_the_side_tables(pg_url):
    from encoderkit.store.pg_store import PgStore

    url = collection_url(pg_url, unique_name("drop"))
    c = Collection.open(url, FakeSparseLateEncoder(), late_index="HNSW16")
    c.add(["sun sea", "snow city"], ids=["a", "b"])
    names = [f"{c.store.table_name}{s}" for s in ("", "_sparse", "_tokens")]
    c.close()
    store = PgStore(url)
    assert store.drop()
    left = store.conn.execute("SELECT count(*) FROM pg_class WHERE relname = ANY(%s)", (names,)).fetchone()[0]
    store.close()
    assert left == 0
    c = Collection.open(url, FakeSparseLateEncoder())  # the name is free again
    assert c.count() == 0 and c.kinds == ("dense", "sparse", "late")
    c.close()
