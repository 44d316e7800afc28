"""What only the PostgreSQL + pgvector backend has: URLs, connection and extension errors, the table's own
checks, atomic writes (a failed or killed write leaves nothing behind), several handles on one collection,
the JSONB `where` translation against SQLite's and the Python reference, and ingest. The shared behaviour is
tested on both backends in test_store_collection.py."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest

from encoderkit.store import Collection
from encoderkit.store.where import matches
from pg_server import collection_url, pg_url, unique_name  # noqa: F401  (pg_url: the session's server)
from store_fakes import FakeEncoder
from test_store_collection import corpus

psycopg = pytest.importorskip("psycopg")
TESTS = Path(__file__).resolve().parent


@pytest.fixture
def url(pg_url):
    return collection_url(pg_url, unique_name())


def _other_login(base: str, user: str, db: str) -> str:
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, f"{user}@{parts.netloc.split('@')[-1]}", f"/{db}", parts.query, ""))


# ---------------------------------------------------------------------- URLs and connections
def test_url_must_name_a_valid_collection(pg_url):
    with pytest.raises(ValueError, match=r"name the collection in the URL: .*collection=NAME"):
        Collection.open(pg_url, FakeEncoder())
    with pytest.raises(ValueError, match="bad collection name 'My-Docs'"):
        Collection.open(collection_url(pg_url, "My-Docs"), FakeEncoder())
    with pytest.raises(FileNotFoundError, match="no collection 'absent'"):
        Collection.open(collection_url(pg_url, "absent"), FakeEncoder(), create=False)
    with pytest.raises(ValueError, match="needs an encoder"):
        Collection.open(collection_url(pg_url, "absent"))


def test_unreachable_server_and_missing_database_are_named(pg_url):
    with pytest.raises(ConnectionError, match=r"cannot connect to PostgreSQL at postgresql://u:\*\*\*@127\.0\.0\.1:9/db"):
        Collection.open("postgresql://u:secret@127.0.0.1:9/db?collection=x&connect_timeout=3", FakeEncoder())
    with pytest.raises(ConnectionError, match='database "no_such_db" does not exist'):
        Collection.open(collection_url(_other_login(pg_url, "postgres", "no_such_db"), "x"), FakeEncoder())


def test_missing_pgvector_extension_is_named(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("CREATE ROLE plain_user LOGIN")
        admin.execute("CREATE DATABASE no_vector")  # a fresh database: pgvector not created there
    try:
        with pytest.raises(RuntimeError, match=r"pgvector extension is not installed in database 'no_vector' and "
                                               r"user 'plain_user' cannot install it.*CREATE EXTENSION vector"):
            Collection.open(collection_url(_other_login(pg_url, "plain_user", "no_vector"), "docs"), FakeEncoder())
        # the owner of the database (here a superuser) gets the extension created on first use
        c = Collection.open(collection_url(_other_login(pg_url, "postgres", "no_vector"), "docs"), FakeEncoder())
        c.add(["now it works"], ids=["a"])
        assert c.search("works", k=1)[0].id == "a"
        c.close()
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("DROP DATABASE no_vector WITH (FORCE)")
            admin.execute("DROP ROLE plain_user")


def test_table_altered_outside_is_refused(url):
    c = Collection.open(url, FakeEncoder(dim=32))
    c.store.conn.execute(f"ALTER TABLE {c.store.table_name} ALTER COLUMN embedding TYPE vector(8)")
    c.close()
    with pytest.raises(ValueError, match=r"records dim 32 but its table .* stores vector\(8\)"):
        Collection.open(url, FakeEncoder(dim=32))


def test_name_taken_by_a_foreign_table(pg_url):
    name = unique_name()
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"CREATE TABLE encoderkit_{name} (x int)")
    with pytest.raises(RuntimeError, match=f"table encoderkit_{name} already exists .* not a recorded encoderkit"):
        Collection.open(collection_url(pg_url, name), FakeEncoder())


# ---------------------------------------------------------------------- atomic writes
def test_failed_writes_leave_nothing(url, monkeypatch):
    c = Collection.open(url, FakeEncoder())
    c.add(["first river text", "second mountain text"], ids=["a", "b"])
    gen = c.store.generation()
    with pytest.raises(ValueError, match="'b' already exists"):
        c.add(["new one", "clash", "new two"], ids=["n1", "b", "n2"])
    with pytest.raises(ValueError, match="NUL character"):
        c.add(["fine", "bad\x00text"], ids=["n3", "n4"])
    with pytest.raises(ValueError, match="NaN or Infinity"):
        c.add(["fine", "also fine"], ids=["n5", "n6"], metadatas=[{}, {"x": float("nan")}])
    # a failure after the rows went in (here: bumping the generation) rolls the whole batch back
    monkeypatch.setattr(c.store, "_bump", lambda: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(RuntimeError, match="disk full"):
        c.upsert(["replaced", "brand new"], ids=["a", "n7"])
    with pytest.raises(RuntimeError, match="disk full"):
        c.delete(["a", "b"])
    monkeypatch.undo()
    assert c.count() == 2 and c.store.generation() == gen
    assert [h.id if h else None for h in c.get(["a", "b", "n1", "n2", "n3", "n5", "n7"])] == ["a", "b"] + [None] * 5
    assert c.get("a").text == "first river text" and c.check()["ok"]
    c.close()


CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from store_fakes import FakeEncoder
from encoderkit.store import Collection
col = Collection.open({url!r}, FakeEncoder(), index="HNSW16")
col.ingest({data!r}, batch_size=40, chunk_tokens=0, progress=False,
           on_commit=lambda report, ids: print("COMMIT " + json.dumps(ids), flush=True))
print("DONE", flush=True)
"""


def test_killed_writer_leaves_only_whole_batches(url, tmp_path):
    data = tmp_path / "docs.jsonl"
    texts, ids, metas = corpus(2000, seed=5)
    data.write_text("".join(json.dumps({"id": i, "text": t, **m}) + "\n" for t, i, m in zip(texts, ids, metas)))
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=str(TESTS), url=url, data=str(data))],
                            stdout=subprocess.PIPE, text=True)
    committed: list[str] = []
    try:
        for line in proc.stdout:
            if line.startswith("COMMIT "):
                committed += json.loads(line[7:])
                if len(committed) >= 5 * 40:  # kill it mid-ingest, after the 5th commit
                    proc.kill()
                    break
    finally:
        proc.kill()
        proc.wait(timeout=60)
    c = Collection.open(url, FakeEncoder())
    n = c.count()
    assert n % 40 == 0 and len(committed) <= n < 2000  # whole batches only: never a half-written one
    assert all(h is not None for h in c.get(committed)) and c.check()["ok"]
    rep = c.ingest(data, batch_size=40, chunk_tokens=0)  # re-running completes it
    assert rep.unchanged == n and c.count() == 2000 and c.check()["ok"]
    c.close()


# ---------------------------------------------------------------------- several handles, integrity
def test_two_handles_see_each_others_writes(url):
    a = Collection.open(url, FakeEncoder(), index="HNSW16")
    b = Collection.open(url, FakeEncoder())
    texts, ids, metas = corpus(200)
    a.add(texts, ids=ids, metadatas=metas)
    assert b.count() == 200 and b.search(texts[17], k=1)[0].id == "d17"  # no cache on b's side to go stale
    b.delete("d17")
    assert "d17" not in [h.id for h in a.search(texts[17], k=5)]
    assert a.store.generation() == b.store.generation() == 2
    a.close(), b.close()


def test_check_finds_a_dropped_index_and_reopen_rebuilds_it(url):
    c = Collection.open(url, FakeEncoder(), index="HNSW16")
    texts, ids, _ = corpus(100)
    c.add(texts, ids=ids)
    assert c.check()["ok"] and c.info()["vector_index"] == "hnsw"
    c.store.conn.execute(f"DROP INDEX {c.store.table_name}_ann")
    r = c.check()
    assert not r["ok"] and any("hnsw vector index" in p and "missing" in p for p in r["problems"]), r
    assert c.search(texts[3], k=1)[0].id == "d3"  # still answers, by an exact scan
    c.close()
    c = Collection.open(url, FakeEncoder())
    assert c.check()["ok"] and c.info()["vector_index"] == "hnsw"
    c.store.conn.execute(f"DROP INDEX {c.store.table_name}_tsv")
    assert any("full-text (GIN) index" in p and "missing" in p for p in c.check()["problems"])
    c.close()


def test_neighbors_and_vectors_round_trip(url):
    c = Collection.open(url, FakeEncoder(), index="HNSW16")
    texts, ids, _ = corpus(150)
    X = FakeEncoder().encode(texts)
    c.add(texts, ids=ids, vectors=X)
    got_ids, V = c.vectors()
    assert got_ids == ids and np.array_equal(V, X / np.linalg.norm(X, axis=1, keepdims=True))  # float32 exact
    I = c.neighbors(X[:20], 3)
    assert (I[:, 0] == c.store.all_rids()[:20]).all()  # each vector's nearest is itself
    c.close()


def test_keyword_ties_are_exact_and_fall_by_row_id(url):
    """Documents that hold the query's words the same way score bit-equal, so a tie falls by rid, whatever order
    the join visits the terms in (a restored table ranked such ties unlike the original before)."""
    c = Collection.open(url, FakeEncoder(), index="Flat")
    texts = [f"batch {b} item {i} words{b % 7} topic{i % 5}" for b in range(30) for i in range(20)]
    for j in range(0, len(texts), 20):  # batches, like a writer: rows spread over the table's pages
        c.add(texts[j:j + 20], ids=[f"d{j + i}" for i in range(20)])
    for query in ("batch 3 item 7", "words2 topic4", "item 7 batch 12 topic1"):
        hits = c.store.keyword_search(query, 600)
        scores = [s for _, s in hits]
        assert len(set(scores)) == len({round(s, 9) for s in scores}), query  # no scores a last bit apart
        assert hits == sorted(hits, key=lambda h: (-h[1], h[0])), query
    c.close()


# ---------------------------------------------------------------------- where: JSONB vs SQLite vs Python
VALUES = [0, 1, 2, 2.5, -1, 10, "1", "a", "b", "abc", "é", "z", "", True, False, None]


def test_where_translation_agrees_with_sqlite_and_reference(url, tmp_path):
    rng = np.random.default_rng(7)
    metas = []
    for i in range(400):
        m = {}
        for key in ("v", "w"):
            if rng.random() < 0.85:  # sometimes missing
                m[key] = VALUES[rng.integers(len(VALUES))]
        if rng.random() < 0.5:
            m["n"] = {"deep": VALUES[rng.integers(len(VALUES))]}
        metas.append(m)
    texts = [f"document number {i}" for i in range(400)]
    pg = Collection.open(url, FakeEncoder())
    lite = Collection.open(tmp_path / "lite", FakeEncoder())
    for c in (pg, lite):
        c.add(texts, ids=[str(i) for i in range(400)], metadatas=metas)
    ops = ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]
    wheres = [{f: {op: v}} for f in ("v", "n.deep") for op in ops for v in VALUES
              if not (v is None and op not in ("$eq", "$ne"))]
    wheres += [{"v": {"$in": [1, "a", 2.5]}}, {"v": {"$nin": [True, "", 2.5]}}, {"v": {"$in": []}},
               {"v": {"$nin": []}}, {"$or": [{"v": {"$gt": 1}}, {"w": "abc"}]},
               {"$and": [{"v": {"$gte": 0}}, {"w": {"$lt": "b"}}], "n.deep": {"$ne": None}}]
    for where in wheres:
        expected = sum(matches(where, m) for m in metas)
        assert pg.count(where) == expected, where
        assert lite.count(where) == expected, where
        hits = pg.search("document number", k=400, mode="keyword", where=where)
        assert len(hits) == expected and all(matches(where, h.metadata) for h in hits), where
    # null inside $in: JSONB follows the reference (a missing/null field is "in" [.., None]); SQLite's IN does not
    where = {"v": {"$in": [1, "a", None]}}
    assert pg.count(where) == sum(matches(where, m) for m in metas)
    pg.close(), lite.close()


# ---------------------------------------------------------------------- ingest
def test_ingest_into_pgvector(url, tmp_path):
    from test_store_ingest import make_tree

    c = Collection.open(url, FakeEncoder())
    make_tree(tmp_path / "docs")
    rep = c.ingest(tmp_path / "docs", batch_size=3)
    assert rep.files == 5 and rep.errors == [] and rep.added == 7 and rep.duplicates == 1
    assert c.count() == 7 and c.get("j2").metadata["tags"] == ["food"]
    assert c.search("summer warmth", k=1)[0].id == "docs/a.txt"
    assert [h.id for h in c.search("python", k=5, mode="keyword", where={"year": {"$gte": 2020}})] == ["j1"]
    again = c.ingest(tmp_path / "docs", batch_size=3)
    assert again.added == 0 and again.unchanged == 7 and c.count() == 7 and c.check()["ok"]
    c.close()
