"""Regression tests for the twelve defects of issue 14 (hostile and careless input against the server and the CLI):
each answers with a 4xx in the API's own format or a one-line CLI error, and leaves every collection usable."""
from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import sqlite3
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

import encoderkit  # noqa: E402
from encoderkit.cli import main as cli_main  # noqa: E402
from encoderkit.serve.app import GuardMiddleware, create_app  # noqa: E402
from encoderkit.serve.auth import KeyStore  # noqa: E402
from encoderkit.serve.batcher import Batcher, TooManyInputs  # noqa: E402
from encoderkit.serve.metrics import Metrics  # noqa: E402
from encoderkit.serve.models import EmbeddingModel, ModelRegistry, RerankModel  # noqa: E402
from encoderkit.serve.state import ServeConfig, ServerState  # noqa: E402
from encoderkit.serve.testing import LiveServer  # noqa: E402
from encoderkit.store import Collection  # noqa: E402
from encoderkit.store.validate import InvalidDocument  # noqa: E402
from pg_server import collection_url, pg_url, unique_name  # noqa: E402,F401  (pg_url: the session's server)
from store_fakes import FakeEncoder  # noqa: E402
from test_serve_clients import shared_encoder, tiny_cross_encoder  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
MAX_QUEUE, MAX_BODY = 16, 256 * 1024
NAN_BODIES = ['{"f": NaN}', '{"f": Infinity}', '{"f": -Infinity}', '{"f": 1e400}', '{"deep": {"n": [1, NaN]}}',
              '{"n": 1' + "0" * 400 + "}", '{"n": -9223372036854775809}']


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from encoderkit.tasks.rerank import CrossEncoder

    cfg = ServeConfig(store=str(tmp_path_factory.mktemp("store")), max_queue=MAX_QUEUE, max_body_bytes=MAX_BODY)
    metrics = Metrics()
    reg = ModelRegistry()
    reg.add(EmbeddingModel(MODEL, shared_encoder(), cfg.limits, metrics))
    ce = CrossEncoder.load(tiny_cross_encoder(tmp_path_factory.mktemp("ce")))
    reg.add_reranker(RerankModel("tiny-ce", ce, cfg.limits, metrics))
    with LiveServer(create_app(cfg, registry=reg, metrics=metrics)) as srv:
        srv.store = cfg.store
        r = httpx.post(srv.url + "/collections", json={"name": "docs"})
        assert r.status_code == 201, r.text
        yield srv


def _raw(server, method: str, path: str, body: bytes, conn: http.client.HTTPConnection | None = None,
         headers: dict | None = None):
    """Send raw bytes (JSON escapes such as \\ud800 reach the server as written); returns (conn, status, json)."""
    conn = conn or http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    data = resp.read()
    assert not resp.will_close, f"{path}: the server dropped the keep-alive connection"
    return conn, resp.status, json.loads(data) if data else None


# ------------------------------------------------------------------ 1: lone surrogates
SURROGATE_CASES = [
    ("/v1/embeddings", '{"model": "%s", "input": ["fine", "abc\\ud800"]}' % MODEL, "openai", 1),
    ("/v1/embeddings", '{"model": "%s", "input": "abc\\udfff"}' % MODEL, "openai", 0),
    ("/api/embed", '{"model": "%s", "input": ["ok", "ok", "x\\ud800y"]}' % MODEL, "ollama", 2),
    ("/api/embeddings", '{"model": "%s", "prompt": "abc\\ud800"}' % MODEL, "ollama", 0),
    ("/embed", '{"inputs": ["a", "abc\\ud800"]}', "tei", 1),
    ("/rerank", '{"query": "q", "texts": ["a", "b\\ud800"]}', "tei", 1),
    ("/rerank", '{"query": "q\\ud800", "texts": ["a"]}', "tei", 0),
    ("/collections/docs/documents", '{"documents": [{"text": "ok"}, {"text": "abc\\ud800"}]}', "tei", 1),
]


@pytest.mark.parametrize("path,body,api,index", SURROGATE_CASES)
def test_lone_surrogate_is_400_naming_the_input_and_keeps_the_connection(server, path, body, api, index):
    conn, status, out = _raw(server, "POST", path, body.encode())
    assert status == 400, out
    msg = out["error"]["message"] if api == "openai" else out["error"]
    assert "surrogate" in msg and f" {index} " in msg, msg
    if api == "openai":
        assert out["error"]["type"] == "invalid_request_error"
    elif api == "ollama":
        assert set(out) == {"error"}
    else:
        assert out["error_type"] == "Validation"
    sock = conn.sock
    _, status, _ = _raw(server, "GET", "/v1/models", b"", conn)  # the same connection still serves
    assert status == 200 and conn.sock is sock
    conn.close()


def test_surrogates_in_stored_values_are_refused_by_the_store(tmp_path):
    col = Collection.open(tmp_path / "c", FakeEncoder())
    for kw in ({"texts": ["a\ud800"]}, {"texts": ["a"], "ids": ["x\udc00"]},
               {"texts": ["a"], "metadatas": [{"k": "\ud800"}]}, {"texts": ["a"], "metadatas": [{"\ud800": 1}]}):
        with pytest.raises(InvalidDocument, match="surrogate"):
            col.add(**kw)
    assert col.count() == 0 and col.check()["ok"]
    col.close()


# ------------------------------------------------------------------ 2: any Content-Type
@pytest.mark.parametrize("ctype", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_json_body_is_parsed_whatever_the_content_type(server, ctype):
    headers = {} if ctype is None else {"Content-Type": ctype}
    for path, body, check in [
        ("/api/embeddings", {"model": "all-minilm", "prompt": "summer warmth"}, lambda o: len(o["embedding"]) == 384),
        ("/v1/embeddings", {"model": MODEL, "input": "summer"}, lambda o: len(o["data"]) == 1),
        ("/embed", {"inputs": ["summer"]}, lambda o: len(o) == 1),
        ("/collections/docs/search", {"query": "summer"}, lambda o: "hits" in o),
    ]:
        r = httpx.post(server.url + path, content=json.dumps(body).encode(), headers=headers)
        assert r.status_code == 200 and check(r.json()), (path, r.text)


# ------------------------------------------------------------------ 3, 4: NaN, Infinity, huge integers
@pytest.mark.parametrize("meta", NAN_BODIES)
def test_non_json_numbers_are_refused_at_ingest_over_http(server, meta):
    before = httpx.get(server.url + "/collections/docs").json()["documents"]
    body = '{"documents": [{"id": "good", "text": "fine"}, {"id": "bad1", "text": "x", "metadata": %s}]}' % meta
    _, status, out = _raw(server, "POST", "/collections/docs/documents", body.encode())
    assert status == 400 and "'bad1'" in out["error"] and out["error_type"] == "Validation", out
    assert httpx.get(server.url + "/collections/docs").json()["documents"] == before
    for path, body in [("/collections/docs/search", {"query": "fine", "where": {"n": 1}}),
                       ("/collections/docs/documents/delete", {"where": {"n": 1}})]:
        assert httpx.post(server.url + path, json=body).status_code == 200
    assert httpx.get(server.url + "/collections/docs/stats").status_code == 200


@pytest.fixture(params=["sqlite", "pgvector"])
def where(request, tmp_path):
    """Where this test's collection lives: a directory or a collection of the session's PostgreSQL server."""
    if request.param == "sqlite":
        return tmp_path / "c"
    return collection_url(request.getfixturevalue("pg_url"), unique_name())


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 10 ** 400, -(2 ** 63) - 1, 2 ** 63,
                                   [1, {"x": float("nan")}]])
def test_both_backends_refuse_values_that_break_queries(where, value):
    col = Collection.open(where, FakeEncoder())
    try:
        col.add(["kept"], ids=["k"], metadatas=[{"n": 1}])
        with pytest.raises(InvalidDocument, match="document 'bad'"):
            col.add(["good", "bad"], ids=["g", "bad"], metadatas=[{}, {"n": value}])
        col.add(["edge"], ids=["e"], metadatas=[{"lo": -(2 ** 63), "hi": 2 ** 63 - 1, "f": 1.5e308}])
        assert col.count() == 2 and col.count({"n": 1}) == 1
        assert [h.id for h in col.search("kept", 5, where={"n": 1})] == ["k"]
        assert col.delete(where={"n": 1}) == 1 and col.check()["ok"]
    finally:
        col.close()


# ------------------------------------------------------------------ 5: chunked bodies over the limit
def test_chunked_body_over_the_limit_is_413(server):
    chunk = b" " * 16384

    def body():
        yield b'{"model": "%s", "input": ["' % MODEL.encode()
        for _ in range(MAX_BODY // len(chunk) + 4):  # 64 KiB over the limit
            yield chunk
        yield b'"]}'

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", "/v1/embeddings", body=body(), encode_chunked=True,
                 headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    resp = conn.getresponse()
    out = json.loads(resp.read())
    assert resp.status == 413 and out["error"]["code"] == "request_too_large"
    assert str(MAX_BODY) in out["error"]["message"]
    conn.close()
    small = httpx.post(server.url + "/v1/embeddings", content=iter([b'{"model": "%s", ' % MODEL.encode(),
                                                                   b'"input": "fine"}']))
    assert small.status_code == 200, small.text  # a chunked body within the limit is served


def test_chunked_body_is_not_read_past_the_limit():
    read = []

    async def receive():
        read.append(1)
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}  # an endless stream

    sent = []

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):  # pragma: no cover - must not be reached
        raise AssertionError("the app was called with an oversized body")

    state = ServerState(ServeConfig(max_body_bytes=10_000), ModelRegistry(), Metrics())
    scope = {"type": "http", "method": "POST", "path": "/v1/embeddings",
             "headers": [(b"transfer-encoding", b"chunked")]}
    asyncio.run(GuardMiddleware(app, state)(scope, receive, send))
    assert sent[0]["status"] == 413 and len(read) == 11  # 11 x 1000 bytes: the first chunk past 10,000


# ------------------------------------------------------------------ 6: a keys file corrupted while serving
def test_corrupted_keys_file_keeps_the_last_good_keys(tmp_path, caplog):
    keys = KeyStore(tmp_path / "keys.json")
    key = keys.add(role="read")[0]
    cfg = ServeConfig(api_keys=str(keys.path))
    reg = ModelRegistry()
    reg.add(EmbeddingModel(MODEL, shared_encoder(), cfg.limits))
    with LiveServer(create_app(cfg, registry=reg)) as srv, caplog.at_level(logging.ERROR, "encoderkit.serve.auth"):
        h = {"Authorization": f"Bearer {key}"}
        assert httpx.get(srv.url + "/v1/models", headers=h).status_code == 200
        keys.path.write_text("{bad", encoding="utf-8")
        os.utime(keys.path, (time.time() + 5, time.time() + 5))
        codes = []
        for _ in range(5):  # the file is re-checked at most once a second
            codes.append(httpx.get(srv.url + "/v1/models", headers=h).status_code)
            codes.append(httpx.get(srv.url + "/v1/models", headers={"Authorization": "Bearer ek-nope"}).status_code)
            time.sleep(0.4)
        assert codes == [200, 401] * 5
        assert len([r for r in caplog.records if "cannot be read" in r.getMessage()]) == 1
        fresh = KeyStore(tmp_path / "other.json")
        key2 = fresh.add(role="read")[0]
        keys.path.write_text(fresh.path.read_text(), encoding="utf-8")  # fixed: the new file takes effect
        os.utime(keys.path, (time.time() + 10, time.time() + 10))
        time.sleep(1.1)
        assert httpx.get(srv.url + "/v1/models", headers=h).status_code == 401
        assert httpx.get(srv.url + "/v1/models", headers={"Authorization": f"Bearer {key2}"}).status_code == 200


@pytest.mark.parametrize("content", ['{"keys": 3}', '[1, 2]', '{"keys": [{"role": "read"}]}',
                                     '{"keys": [{"id": "a", "hash": "h", "collections": "*"}]}', "\xff"])
def test_keys_file_structure_errors_never_escape_as_500(tmp_path, content):
    keys = KeyStore(tmp_path / "keys.json")
    key = keys.add(role="read")[0]
    keys.path.write_text(content, encoding="latin-1")
    os.utime(keys.path, (time.time() + 5, time.time() + 5))
    keys._checked = 0.0
    assert keys.verify(key).role == "read"  # the last good keys
    with pytest.raises(ValueError, match="keys.json"):
        KeyStore(keys.path)  # at start-up a bad file still stops the server


# ------------------------------------------------------------------ 7: empty grants
@pytest.mark.parametrize("grant", ["", ",", " ", " , ", "a,,b"])
def test_keys_add_refuses_empty_collection_grants(tmp_path, capsys, grant):
    f = tmp_path / "keys.json"
    assert cli_main(["keys", "add", "--file", str(f), "--role", "read", "--collections", grant]) == 2
    err = capsys.readouterr().err.strip()
    assert "--collections" in err and len(err.splitlines()) == 1
    assert not f.exists()
    with pytest.raises(ValueError, match="'\\*'"):
        KeyStore(f).add(role="read", collections=[])
    assert cli_main(["keys", "add", "--file", str(f), "--role", "read", "--collections", "*", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["collections"] == ["*"]


# ------------------------------------------------------------------ CLI helpers
@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ENCODERKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(encoderkit, "load", lambda name, **kw: FakeEncoder(name="fake"))
    return tmp_path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err.strip()


def _one_line(err: str) -> str:
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------ 8, 9: names
@pytest.mark.parametrize("name", ["abc\n", "abc\r", "a" * 129, ".hidden", "a/b", "a b"])
def test_http_refuses_bad_collection_names(server, name):
    r = httpx.post(server.url + "/collections", json={"name": name})
    assert r.status_code == 422 and r.json()["error_type"] == "Validation", r.text
    assert name not in os.listdir(server.store)


def test_cli_refuses_bad_and_long_names(home, capsys):
    for name in ("abc\n", "b" * 300):
        code, _, err = run(capsys, "index", "create", name, "--model", "fake")
        assert code == 2 and ("128" in _one_line(err) if len(name) > 128 else "bad collection name" in err)
        code, _, err = run(capsys, "index", "create", name, "--model", "fake", "--store", str(home / "s"))
        assert code == 2 and _one_line(err)
    code, _, err = run(capsys, "index", "create", str(home / ("c" * 300)), "--model", "fake")  # a path: the OS refuses
    assert code == 2 and "too long" in _one_line(err)
    assert not (home / "home" / "collections").exists() or not os.listdir(home / "home" / "collections")


def test_other_patterns_match_whole_strings():
    from encoderkit.store.where import compile_where
    from encoderkit.store import pg_store

    with pytest.raises(ValueError, match="bad field name"):
        compile_where({"year\n": 1})
    with pytest.raises(ValueError, match="bad collection name"):
        pg_store.check_name("abc\n")


# ------------------------------------------------------------------ 10: a failed create leaves nothing
def test_failed_create_leaves_nothing_and_listing_shows_broken_collections(home, capsys, server):
    code, _, err = run(capsys, "index", "create", "x", "--model", "fake", "--index", "HNSW-5")
    assert code == 2 and _one_line(err)
    assert not (home / "home" / "collections" / "x").exists()
    code, out, _ = run(capsys, "index", "create", "x", "--model", "fake", "--json")
    assert code == 0 and json.loads(out)["index"] == "Flat"

    broken = home / "home" / "collections" / "broken"  # as left by an older version: a database with no model
    broken.mkdir()
    sqlite3.connect(broken / "collection.db").close()
    code, out, _ = run(capsys, "index", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows["x"]["documents"] == 0 and "no recorded model" in rows["broken"]["broken"]
    code, out, _ = run(capsys, "index", "list")
    assert code == 0 and "BROKEN" in out and "x " in out

    r = httpx.post(server.url + "/collections", json={"name": "y", "index": "HNSW-5"})
    assert r.status_code == 422 and not os.path.exists(os.path.join(server.store, "y"))
    bad = os.path.join(server.store, "zbroken")
    os.mkdir(bad)
    sqlite3.connect(os.path.join(bad, "collection.db")).close()
    try:
        r = httpx.get(server.url + "/collections")
        assert r.status_code == 200, r.text
        listed = {c["name"]: c for c in r.json()["collections"]}
        assert listed["docs"]["model"].endswith(MODEL) and "no recorded model" in listed["zbroken"]["broken"]
    finally:
        import shutil

        shutil.rmtree(bad)


def test_pg_listing_shows_a_broken_collection(pg_url, capsys):
    import psycopg
    from encoderkit.store.pg_store import PgStore

    name, ok = unique_name(), unique_name()
    for n in (name, ok):
        Collection.open(collection_url(pg_url, n), FakeEncoder()).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:  # the table dropped behind encoderkit's back
        conn.execute(f"DROP TABLE encoderkit_{name}")
    try:
        code, out, _ = run(capsys, "index", "list", "--store", pg_url, "--json")
        rows = {r["name"]: r for r in json.loads(out)}
        assert code == 0 and "vector(None)" in rows[name]["broken"] and rows[ok]["documents"] == 0
    finally:
        for n in (name, ok):
            store = PgStore(collection_url(pg_url, n))
            store.drop()
            store.close()


# ------------------------------------------------------------------ 11: more inputs than the queue holds
@pytest.mark.parametrize("path,body,api", [
    ("/v1/embeddings", {"model": MODEL, "input": ["t"] * (MAX_QUEUE + 4)}, "openai"),
    ("/api/embed", {"model": MODEL, "input": ["t"] * (MAX_QUEUE + 4)}, "ollama"),
    ("/embed", {"inputs": ["t"] * (MAX_QUEUE + 4)}, "tei"),
    ("/rerank", {"query": "q", "texts": ["t"] * (MAX_QUEUE + 4)}, "tei"),
    ("/collections/docs/documents", {"documents": [{"text": f"t{i}"} for i in range(MAX_QUEUE + 4)]}, "tei"),
])
def test_more_inputs_than_the_queue_is_413_naming_the_limit(server, path, body, api):
    r = httpx.post(server.url + path, json=body)
    out = r.json()
    msg = out["error"]["message"] if api == "openai" else out["error"]
    assert r.status_code == 413 and f"--max-queue {MAX_QUEUE}" in msg and "Retry-After" not in r.headers, r.text
    ok = httpx.post(server.url + "/embed", json={"inputs": ["t"] * MAX_QUEUE})
    assert ok.status_code == 200  # exactly the queue's size is admitted


def test_batcher_refuses_a_request_larger_than_its_queue():
    b = Batcher("m", lambda items: items, max_queue=4)
    try:
        with pytest.raises(TooManyInputs, match="4"):
            asyncio.run(b.submit([1] * 5, cost=5))
        assert asyncio.run(b.submit([1] * 4, cost=4)) == [1] * 4
    finally:
        b.close()


# ------------------------------------------------------------------ 12 and 3 (CLI): malformed rows
def test_csv_row_with_a_missing_field_is_an_error_naming_the_line(home, capsys):
    assert run(capsys, "index", "create", "c", "--model", "fake")[0] == 0
    (home / "r.csv").write_text("id,text\n1,hello\n2\n3,world\n", encoding="utf-8")
    code, _, err = run(capsys, "index", "add", "c", str(home / "r.csv"))
    assert code == 2 and "r.csv:3:" in _one_line(err) and "fields" in err
    (home / "ok.csv").write_text('id,text,code\n1,"hello, world",\n2,x,' + "9" * 30 + "\n", encoding="utf-8")
    code, out, _ = run(capsys, "index", "add", "c", str(home / "ok.csv"), "--json")
    assert code == 0 and json.loads(out)["added"] == 2  # an empty last field is a field; a long code stays text
    col = Collection.open(home / "home" / "collections" / "c")
    assert col.get("2").metadata["code"] == "9" * 30
    col.close()


@pytest.mark.parametrize("line", ['{"id": "n", "text": "t", "f": NaN}', '{"id": "n", "text": "t", "f": -Infinity}',
                                  '{"id": "n", "text": "t", "n": 1' + "0" * 400 + "}",
                                  '{"id": "n", "text": "abc\\ud800"}'])
def test_cli_jsonl_with_values_that_break_queries_is_refused(home, capsys, line):
    assert run(capsys, "index", "create", "j", "--model", "fake")[0] == 0
    (home / "d.jsonl").write_text('{"id": "a", "text": "fine", "n": 1}\n' + line + "\n", encoding="utf-8")
    code, _, err = run(capsys, "index", "add", "j", str(home / "d.jsonl"))
    assert code == 2 and "d.jsonl:2" in _one_line(err)
    code, out, _ = run(capsys, "search", "j", "fine", "--where", '{"n": 1}', "--json")
    assert code == 0 and json.loads(out) == []  # nothing of the refused file was stored; search still works
    code, out, _ = run(capsys, "index", "info", "j", "--check", "--json")
    assert code == 0 and json.loads(out)["documents"] == 0
