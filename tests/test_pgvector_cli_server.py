"""pgvector collections from the command line (`encoderkit index ... --store postgresql://...`) and the HTTP
server (`encoderkit serve --store postgresql://...`), each run side by side with the embedded store on the same
documents and queries: same vector-search ids in the same order, same scores, same output. Plus what only a
database has: dropping one collection leaves every other table alone, and bad URLs, unreachable servers and
missing databases give one readable line (CLI) or the API's error format (HTTP), never a traceback."""
from __future__ import annotations

import json
import logging
import shutil
import sys
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest

import encoderkit
from encoderkit.cli import main
from pg_server import pg_url, unique_name  # noqa: F401  (pg_url: the session's server)
from store_fakes import FakeEncoder

psycopg = pytest.importorskip("psycopg")

DOCS = [{"id": "p1", "text": "sunshine and beaches make summer warm", "year": 2021},
        {"id": "p2", "text": "winter snow storms in the mountains", "year": 2018},
        {"id": "p3", "text": "summer holidays at the sunny beach", "year": 2023},
        {"id": "p4", "text": "python code review notes for the summer release", "year": 2022},
        {"id": "p5", "text": "mountain hiking trails under summer sun", "year": 2020}]
QUERIES = ["summer beach", "snow mountains", "code review"]  # no stop words: PostgreSQL drops them, FTS5 not


def _database(base: str, db: str) -> str:
    """The URL of database `db` on the server of `base` (same login, same socket)."""
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


@pytest.fixture(scope="module")
def server_url(request):
    """The test server's URL; skips the module with the reason when PostgreSQL cannot start here."""
    try:
        return request.getfixturevalue("pg_url")
    except pytest.skip.Exception:
        raise
    except Exception as exc:  # no binaries for this platform, no permission to run them, ...
        pytest.skip(f"the PostgreSQL test server could not start: {type(exc).__name__}: {exc}")


@pytest.fixture
def db(server_url):
    """A fresh, empty database (so `list` sees only this test's collections); dropped afterwards."""
    name = unique_name("ek")
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield _database(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


# ---------------------------------------------------------------------- CLI
class TextFake(FakeEncoder):
    family = None  # a text-only model for `index add --model` (no image tower)


@pytest.fixture
def docs(tmp_path, monkeypatch):
    monkeypatch.setenv("ENCODERKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(encoderkit, "load", lambda name, **kw: TextFake(name="fake"))
    d = tmp_path / "docs"
    d.mkdir()
    (d / "papers.jsonl").write_text("\n".join(json.dumps(o) for o in DOCS) + "\n", encoding="utf-8")
    return d


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _session(capsys, store: str, docs) -> dict:
    """One CLI session on a store (folder or database): everything a user would look at, in order."""
    s = ["--store", store]
    got = {}
    code, out, _ = run(capsys, "index", "create", "papers", "--model", "fake", *s, "--json")
    assert code == 0, out
    got["create"] = {k: v for k, v in json.loads(out).items() if k in ("model", "dim", "metric", "index", "documents")}
    code, out, err = run(capsys, "index", "add", "papers", str(docs), *s, "--json")
    assert code == 0, err
    got["add"] = json.loads(out)
    code, out, err = run(capsys, "index", "add", "papers", str(docs), *s)  # the second time: all unchanged
    assert code == 0, err
    got["add_again"] = out
    for q in QUERIES:
        for mode in ("vector", "keyword", "hybrid"):
            code, out, err = run(capsys, "search", "papers", q, "-k", "5", "--mode", mode, *s, "--json")
            assert code == 0, err
            got[f"search {mode} {q}"] = json.loads(out)
        code, out, err = run(capsys, "search", "papers", q, "-k", "3", "--mode", "vector", *s)
        got[f"text {q}"] = [line.split()[2] for line in out.splitlines()[1:]]  # the ID column
    code, out, err = run(capsys, "search", "papers", "summer", "--mode", "vector", "--where",
                         '{"year": {"$gte": 2021}}', *s, "--json")
    got["where"] = [h["id"] for h in json.loads(out)]
    code, out, err = run(capsys, "index", "info", "papers", "--check", *s, "--json")
    info = json.loads(out)
    assert code == 0 and info["check"]["ok"], info
    got["info"] = {k: info[k] for k in ("model", "dim", "metric", "index", "documents")}
    code, out, err = run(capsys, "index", "list", *s)
    got["list"] = out
    code, out, err = run(capsys, "dedup", "papers", "--threshold", "0.5", *s, "--json")
    got["dedup"] = [(g["ids"], round(g["min_cosine"], 5)) for g in json.loads(out)["groups"]]
    code, out, err = run(capsys, "index", "delete", "papers", "--ids", "p1", *s, "--json")
    got["delete_ids"] = json.loads(out)
    code, out, err = run(capsys, "index", "delete", "papers", "--where", '{"year": {"$lt": 2020}}', *s, "--json")
    got["delete_where"] = json.loads(out)
    code, out, err = run(capsys, "index", "delete", "papers", *s, "--json")
    assert code == 0 and "deleted_collection" in json.loads(out), err
    code, out, err = run(capsys, "index", "info", "papers", *s)
    assert code == 2 and "no collection 'papers'" in err and "encoderkit index create papers --store" in err
    code, out, _ = run(capsys, "index", "list", *s, "--json")
    got["list_after_drop"] = json.loads(out)
    return got


def test_cli_round_trip_equals_embedded(db, docs, tmp_path, capsys):
    embedded = _session(capsys, str(tmp_path / "store"), docs)
    pg = _session(capsys, db, docs)
    assert embedded["add"]["added"] == len(DOCS) and pg["add"] == embedded["add"]
    for key in embedded:
        if key.startswith("search"):
            e, p = embedded[key], pg[key]
            if " vector " in key:  # the same ranking, the same cosine scores
                assert [h["id"] for h in p] == [h["id"] for h in e], key
                assert np.allclose([h["score"] for h in p], [h["score"] for h in e], atol=1e-5), key
                assert [h["metadata"] for h in p] == [h["metadata"] for h in e]
            else:  # BM25 (FTS5) and ts_rank_cd x idf score differently; they find the same documents
                assert {h["id"] for h in p} == {h["id"] for h in e}, key
        else:
            assert pg[key] == embedded[key], key
    assert pg["list"].splitlines()[1].split() == ["papers", "5", "5", "Flat", "fake-32"]  # documents, chunks
    assert pg["list_after_drop"] == []


def test_cli_collection_url_as_name(db, docs, capsys):
    url = f"{db}{'&' if '?' in db else '?'}collection=notes"
    code, out, err = run(capsys, "index", "add", url, str(docs), "--model", "fake")
    assert code == 0 and "5 added" in out, err
    code, out, _ = run(capsys, "search", url, "summer beach", "-k", "1", "--mode", "vector", "--json")
    assert json.loads(out)[0]["id"] in {"p1", "p3"}
    code, out, _ = run(capsys, "index", "list", "--store", db, "--json")
    assert [r["name"] for r in json.loads(out)] == ["notes"] and json.loads(out)[0]["documents"] == 5
    code, _, err = run(capsys, "index", "info", url, "--store", db)
    assert code == 2 and "not both" in err
    code, out, _ = run(capsys, "index", "delete", url, "--json")
    assert code == 0 and json.loads(out)["deleted_collection"].endswith("collection=notes")


def test_cli_drop_touches_nothing_else(db, docs, capsys):
    for name in ("keep", "gone"):
        assert run(capsys, "index", "add", name, str(docs), "--model", "fake", "--store", db)[0] == 0
    with psycopg.connect(db, autocommit=True) as conn:  # a table of someone else that looks like ours
        conn.execute("CREATE TABLE encoderkit_foreign (id int)")
        conn.execute("INSERT INTO encoderkit_foreign VALUES (1), (2)")
    code, _, err = run(capsys, "index", "delete", "foreign", "--store", db)
    assert code == 2 and "no collection 'foreign'" in err
    code, out, _ = run(capsys, "index", "delete", "gone", "--store", db, "--json")
    assert code == 0
    with psycopg.connect(db, autocommit=True) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert tables == {"encoderkit_meta", "encoderkit_keep", "encoderkit_foreign"}
        assert conn.execute("SELECT count(*) FROM encoderkit_foreign").fetchone()[0] == 2
        assert {r[0] for r in conn.execute("SELECT DISTINCT collection FROM encoderkit_meta")} == {"keep"}
    code, out, _ = run(capsys, "index", "info", "keep", "--store", db, "--check", "--json")
    assert code == 0 and json.loads(out)["documents"] == 5 and json.loads(out)["check"]["ok"]
    code, out, _ = run(capsys, "index", "list", "--store", db, "--json")
    assert [r["name"] for r in json.loads(out)] == ["keep"]


def _one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_cli_bad_urls_are_one_line_errors(server_url, docs, capsys):
    cases = [
        (["index", "list", "--store", "postgresql://u@[::1/db"], "malformed PostgreSQL URL postgresql://u@[::1/db"),
        (["index", "create", "docs", "--model", "fake", "--store", "postgresql://u@127.0.0.1:notaport/db"],
         "malformed PostgreSQL URL"),
        (["index", "info", "docs", "--store", "postgresql://u@127.0.0.1/db?bogus=1"],
         'malformed PostgreSQL URL postgresql://u@127.0.0.1/db?bogus=1: invalid URI query parameter: "bogus"'),
        (["search", "docs", "x", "--store", "postgresql://u:secret@127.0.0.1:9/db?connect_timeout=3"],
         "cannot connect to PostgreSQL at postgresql://u:***@127.0.0.1:9/db"),
        (["index", "list", "--store", _database(server_url, "no_such_db")], 'database "no_such_db" does not exist'),
        (["index", "create", "My-Docs", "--model", "fake", "--store", server_url], "bad collection name 'My-Docs'"),
        (["index", "list", "--store", f"{server_url}&collection=x"], "names a collection"),
        (["search", "absent_one", "x", "--store", server_url], "no collection 'absent_one' in postgresql://"),
        (["index", "add", "absent_one", str(docs), "--store", server_url], "or pass --model"),
    ]
    for argv, want in cases:
        err = _one_line_error(*run(capsys, *argv)[::2])
        assert want in err, (argv, err)
        assert "secret" not in err
    assert run(capsys, "index", "list", "--store", server_url, "--json")[0] == 0  # nothing was created meanwhile


# ---------------------------------------------------------------------- HTTP server
httpx = pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A random 2-layer BERT embedder (dim 32) and cross-encoder with MiniLM's tokenizer: real models, fast."""
    transformers = pytest.importorskip("transformers")
    import torch

    from encoderkit.checkpoints.hub import packaged_folder
    from encoderkit.tasks.rerank import CrossEncoder
    from test_serve_clients import tiny_cross_encoder

    path = tmp_path_factory.mktemp("tiny_embedder")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=512)
    transformers.BertModel(cfg).eval().save_pretrained(path)
    tok_dir = packaged_folder("sentence-transformers/all-MiniLM-L6-v2")
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(tok_dir / f, path / f)
    ce_path = tiny_cross_encoder(tmp_path_factory.mktemp("tiny_ce"))
    return encoderkit.load(str(path)), CrossEncoder.load(ce_path)


def _live(store: str, tiny_models):
    from encoderkit.serve.app import create_app
    from encoderkit.serve.metrics import Metrics
    from encoderkit.serve.models import EmbeddingModel, ModelRegistry, RerankModel
    from encoderkit.serve.state import ServeConfig
    from encoderkit.serve.testing import LiveServer

    enc, ce = tiny_models
    cfg = ServeConfig(store=store)
    metrics = Metrics()
    reg = ModelRegistry()
    reg.add(EmbeddingModel("tiny", enc, cfg.limits, metrics))
    reg.add_reranker(RerankModel("tiny-ce", ce, cfg.limits, metrics))
    return LiveServer(create_app(cfg, registry=reg, metrics=metrics))


HTTP_DOCS = [{"id": "cat", "text": "The cat sat on the mat and purred.", "metadata": {"topic": "pets", "year": 2020}},
             {"id": "dog", "text": "Dogs love long walks in the park.", "metadata": {"topic": "pets", "year": 2023}},
             {"id": "stocks", "text": "Stock markets fell sharply on Monday.", "metadata": {"topic": "finance", "year": 2023}},
             {"id": "tern", "text": "Arctic terns migrate from pole to pole.", "metadata": {"topic": "birds", "year": 2021}},
             {"id": "ship", "text": "The cargo ship left the harbour at dawn.", "metadata": {"topic": "travel", "year": 2019}}]


def _http_session(url: str) -> dict:
    """The collection routes in order; (status, body) of each, the bodies as a client would compare them."""
    c = httpx.Client(base_url=url, timeout=60)
    got = {}

    def call(key, method, path, **kw):
        r = c.request(method, path, **kw)
        got[key] = (r.status_code, r.json())
        return r.json()

    call("create", "POST", "/collections", json={"name": "notes"})
    call("create_again", "POST", "/collections", json={"name": "notes"})
    call("add", "POST", "/collections/notes/documents", json={"documents": HTTP_DOCS})
    call("add_dup", "POST", "/collections/notes/documents", json={"documents": HTTP_DOCS[:1]})
    got["add_dup"] = (got["add_dup"][0], got["add_dup"][1]["error_type"])
    call("list", "GET", "/collections")
    call("describe", "GET", "/collections/notes")
    call("stats", "GET", "/collections/notes/stats")  # the web page's routes
    call("map", "GET", "/collections/notes/map", params={"limit": 100})
    call("locate", "POST", "/collections/notes/map/locate", json={"query": "cats"})
    call("similar", "POST", "/collections/notes/similar", json={"id": "cat", "k": 2})
    for q in ("kitten rug mat", "markets", "birds migrating", "cargo harbours"):  # no stop words (see QUERIES)
        for mode in ("vector", "keyword", "hybrid"):
            call(f"search {mode} {q}", "POST", "/collections/notes/search", json={"query": q, "k": 5, "mode": mode})
    call("where", "POST", "/collections/notes/search",
         json={"query": "animals", "k": 5, "where": {"topic": "pets", "year": {"$gte": 2021}}})
    call("bad_where", "POST", "/collections/notes/search", json={"query": "x", "where": {"year": {"$bogus": 1}}})
    call("rerank", "POST", "/collections/notes/search", json={"query": "pets", "k": 3, "rerank": True, "rerank_top": 5})
    call("upsert", "PUT", "/collections/notes/documents",
         json={"documents": [{"id": "cat", "text": "Cats chase mice at night.", "metadata": {"topic": "pets"}}]})
    call("get", "GET", "/collections/notes/documents/cat")
    call("delete_where", "POST", "/collections/notes/documents/delete", json={"where": {"topic": "finance"}})
    call("delete_ids", "POST", "/collections/notes/documents/delete", json={"ids": ["dog", "nope"]})
    call("get_gone", "GET", "/collections/notes/documents/dog")
    call("describe_after", "GET", "/collections/notes")
    call("drop", "DELETE", "/collections/notes")
    call("dropped_search", "POST", "/collections/notes/search", json={"query": "x"})
    call("drop_again", "DELETE", "/collections/notes")
    call("list_after", "GET", "/collections")
    return got


def test_server_round_trip_equals_embedded(db, tiny_models, tmp_path):
    with _live(str(tmp_path / "store"), tiny_models) as srv:
        embedded = _http_session(srv.url)
    with _live(db, tiny_models) as srv:
        pg = _http_session(srv.url)
    assert embedded["create"][0] == 201 and embedded["add"] == (200, {"ids": [d["id"] for d in HTTP_DOCS]})
    assert embedded["drop"] == (200, {"dropped": "notes"}) and embedded["dropped_search"][0] == 404
    for key in embedded:
        (es, e), (ps, p) = embedded[key], pg[key]
        assert ps == es, (key, p, e)
        if key == "stats":  # the same but for the on-disk figures of each backend
            assert p["updated"] is None and e["updated"], (p, e)
            drop = ("updated", "bytes")
            assert {k: v for k, v in p.items() if k not in drop} == {k: v for k, v in e.items() if k not in drop}
            assert p["sampled"] == len(HTTP_DOCS) and p["fields"]["topic"]["count"] == len(HTTP_DOCS)
            continue
        if key in ("map", "locate"):  # PCA of the same vectors: same spread (an axis may flip, rows may reorder)
            if key == "map":
                assert sorted(pt["id"] for pt in p["points"]) == sorted(pt["id"] for pt in e["points"])
                assert p["total"] == e["total"] == len(HTTP_DOCS)
                assert np.allclose(p["explained_variance"], e["explained_variance"], atol=1e-4)
            else:
                assert np.allclose(np.abs([p["x"], p["y"]]), np.abs([e["x"], e["y"]]), atol=1e-4)
            continue
        if key.startswith("search") or key in ("where", "rerank", "similar"):
            if key.startswith("search keyword") or key.startswith("search hybrid"):  # BM25 vs ts_rank_cd x idf
                assert {h["id"] for h in p["hits"]} == {h["id"] for h in e["hits"]}, key
                continue
            assert [h["id"] for h in p["hits"]] == [h["id"] for h in e["hits"]], key
            assert np.allclose([h["score"] for h in p["hits"]], [h["score"] for h in e["hits"]], atol=1e-5), key
            assert [h["metadata"] for h in p["hits"]] == [h["metadata"] for h in e["hits"]], key
        else:
            assert p == e, key


def test_server_pg_names_and_lost_connection(db, tiny_models):
    with _live(db, tiny_models) as srv:
        c = httpx.Client(base_url=srv.url, timeout=60)
        r = c.post("/collections", json={"name": "Notes-2"})  # fine for a folder, not for a table name
        assert r.status_code == 422 and "lowercase" in r.json()["error"] and "postgresql" not in r.json()["error"]
        assert c.post("/collections", json={"name": "notes", "index": "IVF1024,PQ16"}).status_code == 422
        assert c.get("/collections").json() == {"collections": []}  # the refused create left nothing behind
        assert c.post("/collections", json={"name": "notes", "index": "HNSW16"}).status_code == 201
        assert c.post("/collections/notes/documents", json={"documents": HTTP_DOCS}).status_code == 200
        with psycopg.connect(db, autocommit=True) as admin:  # the database restarts under the server
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        r = c.post("/collections/notes/search", json={"query": "cat", "k": 2})
        assert r.status_code == 503 and r.json()["error_type"] == "Unhealthy", r.text
        assert "collection store is unavailable" in r.json()["error"]
        r = c.post("/collections/notes/search", json={"query": "cat", "k": 2})  # reconnected
        assert r.status_code == 200 and len(r.json()["hits"]) == 2
        assert c.get("/collections/notes").json()["documents"] == len(HTTP_DOCS)


def test_server_bad_store_urls(server_url, capsys):
    from encoderkit.serve.collections_api import CollectionManager

    with pytest.raises(RuntimeError, match=r"--store: cannot connect to PostgreSQL at postgresql://u:\*\*\*@127"):
        CollectionManager("postgresql://u:secret@127.0.0.1:9/db?connect_timeout=3")
    with pytest.raises(RuntimeError, match='database "no_such_db" does not exist'):
        CollectionManager(_database(server_url, "no_such_db"))
    with pytest.raises(ValueError, match="malformed PostgreSQL URL"):
        CollectionManager("postgresql://u@[::1/db")
    with pytest.raises(ValueError, match="names a collection"):
        CollectionManager(f"{server_url}&collection=x")
    # `encoderkit serve` refuses to start with one line, before loading any model
    interval, level = sys.getswitchinterval(), logging.getLogger("encoderkit").level
    try:
        code, _, err = run(capsys, "serve", "--store", "postgresql://u:secret@127.0.0.1:9/db?connect_timeout=3",
                           "--model", "no-such-model-is-loaded", "--port", "1", "--log-level", "warning")
    finally:
        sys.setswitchinterval(interval)
        logging.getLogger("encoderkit").setLevel(level)
    assert "cannot connect to PostgreSQL" in _one_line_error(code, err) and "secret" not in err
