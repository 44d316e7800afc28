"""Collection: CRUD, persistence, exact search vs numpy, where filters, hybrid/rerank plumbing, bad input.
The shared suite runs against both backends: the embedded store (SQLite + FAISS, a directory) and PostgreSQL +
pgvector (a real server from tests/pg_server.py, a postgresql:// URL); tests of what only the embedded store has
(its FAISS cache file, its FTS5 triggers) run for it alone."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from encoderkit.store import Collection, collection_path
from encoderkit.store.fusion import rrf, weighted
from encoderkit.store.where import compile_where, matches
from pg_server import collection_url, pg_url, unique_name  # noqa: F401  (pg_url: the session's server)
from store_fakes import FakeEncoder

WORDS = ("cat dog sun beach summer winter snow river mountain city car train music piano guitar code python "
         "rust bread cheese wine coffee tea rain storm cloud").split()


def corpus(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) + f" doc{i}" for i in range(n)]
    metas = [{"year": int(2000 + rng.integers(0, 25)), "lang": str(rng.choice(["en", "de", "fr"])),
              "score": float(rng.random()), "flag": bool(rng.random() < 0.5),
              **({"extra": {"level": int(rng.integers(0, 3))}} if i % 3 else {})} for i in range(n)]
    return texts, [f"d{i}" for i in range(n)], metas


@pytest.fixture(params=["sqlite", "pgvector"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def loc(backend, tmp_path, request):
    """loc(name): where this test's collection `name` lives: a directory (sqlite) or a postgresql:// URL naming
    a collection of the session's PostgreSQL server (unique per test)."""
    if backend == "sqlite":
        return lambda name: tmp_path / name
    base, prefix = request.getfixturevalue("pg_url"), unique_name()
    return lambda name: collection_url(base, f"{prefix}_{re.sub(r'[^a-z0-9_]', '_', name.lower())}")


@pytest.fixture
def col(loc):
    c = Collection.open(loc("c"), FakeEncoder())
    texts, ids, metas = corpus(300)
    c.add(texts, ids=ids, metadatas=metas)
    yield c
    c.close()


def test_add_get_count_delete(col):
    assert col.count() == 300 and len(col) == 300
    h = col.get("d5")
    assert h.id == "d5" and h.text.endswith("doc5") and "year" in h.metadata
    assert col.get(["d1", "nope"])[1] is None
    with pytest.raises(ValueError, match="already exists"):
        col.add(["x"], ids=["d1"])
    generated = col.add(["an id is made up for me"])
    assert len(generated) == 1 and col.get(generated[0]).text == "an id is made up for me"
    assert col.delete(["d1", "d2", "missing"]) == 2
    assert col.count() == 299 and col.get("d1") is None
    assert col.check()["ok"]


def test_exact_search_matches_numpy(col):
    ids, X = col.vectors()
    enc = col.encoder
    for q in ["cat beach summer", "python rust code", "coffee tea rain"]:
        qv = enc.encode(q)
        ref = [ids[i] for i in np.argsort(-(X @ qv), kind="stable")[:10]]
        got = [h.id for h in col.search(q, k=10)]
        assert got == ref
        scores = [h.score for h in col.search(q, k=10)]
        assert np.allclose(scores, np.sort(X @ qv)[::-1][:10], atol=1e-5)


def test_persistence_same_results_after_reopen(loc, backend):
    c = Collection.open(loc("p"), FakeEncoder())
    texts, ids, metas = corpus(200)
    c.add(texts, ids=ids, metadatas=metas)
    before = {m: [(h.id, round(h.score, 5)) for h in c.search("summer sun beach", k=7, mode=m)]
              for m in ("vector", "keyword", "hybrid")}
    c.close()
    if backend == "sqlite":
        assert loc("p").joinpath("index.faiss").exists()
    c2 = Collection.open(loc("p"), FakeEncoder())
    after = {m: [(h.id, round(h.score, 5)) for h in c2.search("summer sun beach", k=7, mode=m)]
             for m in ("vector", "keyword", "hybrid")}
    assert before == after
    assert c2.check()["ok"]
    c2.close()


def test_stale_or_missing_index_is_rebuilt(tmp_path):  # the embedded store's FAISS cache (pgvector has none)
    c = Collection.open(tmp_path / "s", FakeEncoder())
    texts, ids, _ = corpus(50)
    c.add(texts, ids=ids)
    c.close()
    # another writer (a second handle, never flushed) moves SQLite ahead of the saved index
    c2 = Collection.open(tmp_path / "s", FakeEncoder())
    c2.add(["a brand new river mountain text"], ids=["new"])
    c2.store.close()  # dies without saving its index
    c3 = Collection.open(tmp_path / "s", FakeEncoder())
    assert c3.search("brand new river mountain text", k=1)[0].id == "new"
    assert c3.check()["ok"]
    c3.close()
    (tmp_path / "s" / "index.faiss").unlink()
    c4 = Collection.open(tmp_path / "s", FakeEncoder())
    assert c4.search("brand new river mountain text", k=1)[0].id == "new"
    c4.close()


def test_delete_removes_from_vector_and_keyword(col):
    q = col.get("d7").text
    assert col.search(q, k=1)[0].id == "d7"
    assert "d7" in [h.id for h in col.search("doc7", k=5, mode="keyword")]
    col.delete("d7")
    for mode in ("vector", "keyword", "hybrid"):
        assert "d7" not in [h.id for h in col.search(q, k=300, mode=mode)]
    assert col.search("doc7", k=5, mode="keyword") == []


def test_upsert_replaces(col):
    col.upsert(["completely different piano guitar music"], ids=["d3"], metadatas=[{"year": 1990}])
    assert col.get("d3").metadata == {"year": 1990}
    assert col.count() == 300
    assert col.search("completely different piano guitar music", k=1)[0].id == "d3"
    assert "d3" not in [h.id for h in col.search("doc3", k=10, mode="keyword")]
    assert col.check()["ok"]


WHERES = [
    {"year": {"$gte": 2020}},
    {"lang": "de"},
    {"lang": {"$ne": "en"}},
    {"year": {"$gt": 2005, "$lt": 2010}},
    {"score": {"$lte": 0.1}},
    {"lang": {"$in": ["de", "fr"]}, "flag": True},
    {"lang": {"$nin": ["de", "fr"]}},
    {"$or": [{"year": 2001}, {"lang": "fr", "score": {"$gt": 0.9}}]},
    {"$and": [{"year": {"$gte": 2010}}, {"flag": False}]},
    {"extra.level": 2},
    {"extra.level": {"$ne": 2}},
    {"year": 2024, "lang": "en"},
]


@pytest.mark.parametrize("where", WHERES)
def test_where_filter_before_top_k(col, where):
    expected = {h.id for h in col.get([f"d{i}" for i in range(300)]) if matches(where, h.metadata)}
    assert col.count(where) == len(expected)
    for mode in ("vector", "keyword", "hybrid"):
        hits = col.search("cat dog sun beach", k=10, mode=mode, where=where)
        assert all(h.id in expected for h in hits), (mode, where)
        assert all(matches(where, h.metadata) for h in hits)
        if mode == "vector":  # every matching document has a vector: k come back when k exist
            assert len(hits) == min(10, len(expected))
    assert col.search("x", k=10, where=json.dumps(where)) is not None  # JSON text accepted too


def test_where_on_hnsw_and_ivf_returns_k(loc):
    texts, ids, metas = corpus(1200, seed=3)
    for factory in ("HNSW32", "IVF8,Flat"):  # (PQ training takes minutes on this shared CPU)
        c = Collection.open(loc(factory.replace(",", "_")), FakeEncoder(), index=factory)
        c.add(texts, ids=ids, metadatas=metas)
        for where in ({"year": 2003}, {"lang": "de"}, {"year": {"$gte": 2001}}):
            expected = sum(matches(where, m) for m in metas)
            hits = c.search("summer beach sun", k=10, where=where)
            assert len(hits) == min(10, expected) and all(matches(where, h.metadata) for h in hits)
        c.delete(["d0", "d1"])
        assert c.check()["ok"], c.check()
        c.close()
        c = Collection.open(loc(factory.replace(",", "_")), FakeEncoder())
        assert c.check()["ok"] and c.count() == 1198
        assert {"d0", "d1"}.isdisjoint(h.id for h in c.search(texts[0], k=50))
        c.close()


def test_ivf_untrained_is_exact_then_trains(loc, backend):
    c = Collection.open(loc("ivf"), FakeEncoder(), index="IVF4,Flat")
    texts, ids, _ = corpus(100)
    c.add(texts, ids=ids)  # fewer than the 156 (39 per list) needed to train: exact search over the table
    assert c.search(texts[10], k=1)[0].id == "d10"
    if backend == "pgvector":
        assert c.info()["vector_index"].startswith("IVF4,Flat: not built yet")
    t2, i2, _ = corpus(300, seed=9)
    c.add(t2, ids=[f"e{i}" for i in range(300)])
    assert (c._sync_index().is_trained if backend == "sqlite" else c.info()["vector_index"] == "ivfflat")
    assert c.check()["ok"]
    assert len(c.search("cat", k=5)) == 5
    c.close()


def test_metrics_ip_and_l2(loc):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 32)).astype(np.float32)
    q = rng.standard_normal(32).astype(np.float32)
    for metric, ref in (("ip", X @ q), ("l2", -((X - q) ** 2).sum(1))):
        c = Collection.open(loc(metric), FakeEncoder(), metric=metric)
        c.add([f"t{i}" for i in range(100)], ids=[str(i) for i in range(100)], vectors=X)
        got = [h.id for h in c.search(q, k=5)]
        assert got == [str(i) for i in np.argsort(-ref)[:5]]
        c.close()


def test_hybrid_fusion_and_rerank_plumbing(col):
    vec = col.search("summer beach doc42", k=100, mode="vector")  # hybrid fuses the top max(2k, 100) of each
    kw = col.search("summer beach doc42", k=100, mode="keyword")
    hyb = col.search("summer beach doc42", k=5, mode="hybrid")
    ref = rrf([[(h.id, h.score) for h in vec], [(h.id, h.score) for h in kw]])
    assert [(h.id, round(h.score, 9)) for h in hyb] == [(d, round(s, 9)) for d, s in ref[:5]]
    assert hyb[0].scores["fused"] == hyb[0].score and "vector" in hyb[0].scores
    w = col.search("summer beach doc42", k=5, mode="hybrid", fusion="weighted", alpha=0.5)
    assert 0 <= w[0].score <= 1.0

    class ByLength:
        calls = 0

        def score(self, query, passages):
            ByLength.calls += 1
            return np.array([-len(p) for p in passages], dtype=np.float32)

    hits = col.search("cat dog", k=5, rerank=ByLength(), rerank_top=20)
    first = col.search("cat dog", k=20)
    assert ByLength.calls == 1 and len(hits) == 5
    assert [h.id for h in hits] == [h.id for h in sorted(first, key=lambda h: len(h.text))][:5]
    assert "first_stage" in hits[0].scores
    with pytest.raises(TypeError, match="score"):
        col.search("cat", rerank=42)


def test_rerank_weight_fuses_z_scores_with_the_first_stage(col):
    """rerank_weight w < 1 orders the reranked hits by w z(rerank) + (1 - w) z(first stage), each z-normalized over
    those hits; w = 1 is the reranker alone, w = 0 keeps the first-stage order; anything else is refused."""
    class ByLength:
        def score(self, query, passages):
            return np.array([-len(p) for p in passages], dtype=np.float32)

    first = col.search("cat dog", k=20, mode="hybrid")

    def z(v):
        v = np.asarray(v, np.float64)
        return (v - v.mean()) / v.std()
    for w in (0.0, 0.3, 0.8, 1.0):
        hits = col.search("cat dog", k=20, mode="hybrid", rerank=ByLength(), rerank_top=20, rerank_weight=w)
        fused = w * z([-len(h.text) for h in first]) + (1 - w) * z([h.score for h in first])
        want = [first[i].id for i in sorted(range(20), key=lambda i: -fused[i])] if w < 1 else \
            [h.id for h in sorted(first, key=lambda h: len(h.text))]
        assert [h.id for h in hits] == want, w
        by_id = {h.id: h for h in hits}
        for f in first:  # both scores are kept; `score` is what orders the hits
            assert by_id[f.id].scores["first_stage"] == f.score
            assert by_id[f.id].scores["rerank"] == -len(f.text)
        if w < 1:
            assert [round(h.score, 9) for h in hits] == sorted((round(float(x), 9) for x in fused), reverse=True)
    assert [h.id for h in col.search("cat dog", k=20, mode="hybrid", rerank=ByLength(), rerank_top=20,
                                     rerank_weight=0.0)] == [h.id for h in first]
    for bad in (-0.1, 1.5, "0.5", True, float("nan")):
        with pytest.raises(ValueError, match="rerank_weight must be a number from 0 to 1"):
            col.search("cat", rerank=ByLength(), rerank_weight=bad)


def test_fusion_units():
    a = [("x", 0.9), ("y", 0.8), ("z", 0.1)]
    b = [("z", 12.0), ("x", 3.0)]
    fused = dict(rrf([a, b], k=60))
    assert fused["x"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["z"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused["y"] == pytest.approx(1 / 62)
    w = dict(weighted([a, b], [0.5, 0.5]))
    assert w["z"] == pytest.approx(0.5 * 0.0 + 0.5 * 1.0)
    assert w["x"] == pytest.approx(0.5 * 1.0 + 0.5 * 0.0)


# ---------------------------------------------------------------------- bad input
def test_empty_collection_search_is_empty(loc):
    c = Collection.open(loc("e"), FakeEncoder())
    for mode in ("vector", "keyword", "hybrid"):
        assert c.search("anything", k=5, mode=mode) == []
    assert c.check()["ok"]
    c.close()


@pytest.mark.parametrize("k,err", [(0, ValueError), (-3, ValueError), (2.5, TypeError), ("10", TypeError),
                                   (True, TypeError), (None, TypeError)])
def test_bad_k(col, k, err):
    with pytest.raises(err, match="k must be a positive integer"):
        col.search("cat", k=k)


def test_unknown_operator_is_named(col):
    with pytest.raises(ValueError, match=r"\$regex"):
        col.search("cat", where={"lang": {"$regex": "e.*"}})
    with pytest.raises(ValueError, match=r"\$not"):
        col.search("cat", where={"$not": {"lang": "en"}})
    with pytest.raises(ValueError, match="unknown search mode 'semantic'"):
        col.search("cat", mode="semantic")
    with pytest.raises(ValueError, match="not valid JSON"):
        compile_where("{year: 2020}")


def test_model_mismatch_is_refused(loc):
    c = Collection.open(loc("m"), FakeEncoder(dim=32))
    c.add(["hello"], ids=["h"])
    c.close()
    with pytest.raises(ValueError, match=r"fake-hash-32.*fake-hash-16|fake-hash-16.*fake-hash-32") as e:
        Collection.open(loc("m"), FakeEncoder(dim=16))
    assert "dim 32" in str(e.value) and "dim 16" in str(e.value)
    other = FakeEncoder(dim=32, name="other-model")
    with pytest.raises(ValueError, match="other-model-32"):
        Collection.open(loc("m"), other)
    with pytest.raises(ValueError, match="HNSW32"):
        Collection.open(loc("m"), FakeEncoder(dim=32), index="HNSW32")


def test_bad_factory_and_vectors(loc, backend):
    with pytest.raises(ValueError, match=f"{'FAISS' if backend == 'sqlite' else 'pgvector'} cannot build index 'Bogus7'"):
        Collection.open(loc("b"), FakeEncoder(), index="Bogus7")
    c = Collection.open(loc("v"), FakeEncoder())
    with pytest.raises(ValueError, match=r"shape \(2, 32\)"):
        c.add(["a", "b"], vectors=np.zeros((2, 7), np.float32))
    with pytest.raises(TypeError, match="list of strings"):
        c.add("just a string")
    with pytest.raises(ValueError, match="appears more than once"):
        c.add(["a", "b"], ids=["x", "x"])
    with pytest.raises(ValueError, match="not JSON-serializable"):
        c.add(["a"], metadatas=[{"when": object()}])
    assert c.count() == 0
    c.close()


def test_collection_path(tmp_path, monkeypatch):
    monkeypatch.setenv("ENCODERKIT_HOME", str(tmp_path))
    assert collection_path("docs") == tmp_path / "collections" / "docs"
    assert collection_path("docs", store=tmp_path / "x") == tmp_path / "x" / "docs"
    assert collection_path(str(tmp_path / "here")) == tmp_path / "here"
    with pytest.raises(ValueError, match="bad collection name"):
        collection_path("no spaces please")


def test_check_detects_disagreement(tmp_path):  # FAISS cache and FTS5 triggers: the embedded store only
    c = Collection.open(tmp_path / "k", FakeEncoder())
    texts, ids, _ = corpus(20)
    c.add(texts, ids=ids)
    assert c.check()["ok"]
    c._sync_index().remove([int(c.store.all_rids()[0])])  # the vector index loses a document
    r = c.check()
    assert not r["ok"] and any("vector index disagrees" in p and "1 documents missing" in p for p in r["problems"])
    c._index = None  # rebuilt from SQLite on next use
    assert c.check()["ok"]
    c.store.conn.execute("DROP TRIGGER docs_ad")  # a delete that bypasses the FTS trigger
    c.store.conn.execute("DELETE FROM docs WHERE id = 'd3'")
    assert any("FTS5" in p for p in c.check()["problems"])
    c.store.close()


def test_rerank_by_name_loads_cross_encoder_once(col, monkeypatch):
    from encoderkit.tasks import rerank as rr

    loaded = []

    class Fake:
        def score(self, query, passages):
            return np.array([p.count("cat") for p in passages], dtype=np.float32)

    monkeypatch.setattr(rr.CrossEncoder, "load", classmethod(lambda cls, name, **kw: loaded.append(name) or Fake()))
    for _ in range(2):
        hits = col.search("cat", k=3, rerank="some/cross-encoder", rerank_top=30)
    assert loaded == ["some/cross-encoder"]
    assert hits[0].text.count("cat") == max(h.text.count("cat") for h in col.search("cat", k=30))
    with pytest.raises(TypeError, match="rerank_top must be a positive integer"):
        col.search("cat", rerank=Fake(), rerank_top=0.5)
