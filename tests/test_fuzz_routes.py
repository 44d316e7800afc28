"""Property-based bad input against every HTTP route of `encoderkit serve` (hypothesis): random JSON of the wrong
types, random Unicode with lone surrogates and NUL, huge numbers, NaN, deep nesting, random metadata values and
random `where` trees. Every answer is a success or a 4xx in the error format of the route's API, never a 5xx (nor
TEI's 424 "model failure"); after every write the collection's count moved by exactly what the server reported
(nothing on a refusal) and the collection passes check(), on both backends (a folder; PostgreSQL + pgvector).
A tiny random BERT serves, so the file runs in seconds (ENCODERKIT_FUZZ_EXAMPLES=N: N examples per test, not 40)."""
from __future__ import annotations

import http.client
import json
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import encoderkit  # noqa: E402
from encoderkit.serve.app import create_app  # noqa: E402
from encoderkit.serve.errors import api_of  # noqa: E402
from encoderkit.serve.metrics import Metrics  # noqa: E402
from encoderkit.serve.models import EmbeddingModel, ModelRegistry, RerankModel  # noqa: E402
from encoderkit.serve.state import ServeConfig  # noqa: E402
from encoderkit.serve.testing import LiveServer  # noqa: E402
from encoderkit.store import Collection  # noqa: E402
from pg_server import collection_url, pg_url, unique_name  # noqa: E402,F401  (pg_url: the session's server)
from test_serve_clients import tiny_cross_encoder  # noqa: E402
from test_tei_routes import SparseMiniLM, tiny_classifier  # noqa: E402
from tiny_checkpoints import tiny_family_folder  # noqa: E402

MAX_BODY = 256 * 1024
DEEP = "\x01DEEP\x01"  # a placeholder string, replaced by a raw deeply nested JSON text after json.dumps
FUZZ = settings(max_examples=int(os.environ.get("ENCODERKIT_FUZZ_EXAMPLES", "40")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
DELIBERATE_424 = ("has no sparse output",)  # TEI's own answer for /embed_sparse on a dense model
SEED_DOCS = [{"id": f"s{i}", "text": f"w{i} w{i + 1} w{i + 2}", "metadata": {"n": i, "lang": "en" if i % 2 else "de",
                                                                            "tags": ["a", "b"][: i % 3], "a": {"b": i}}}
             for i in range(8)]


@dataclass(frozen=True)
class Req:
    """One request: method, path and a JSON-able body (dumped with NaN, surrogates as \\uXXXX escapes, DEEP)."""
    method: str
    path: str
    body: object = None
    deep: int = 0  # nesting depth of the raw JSON that replaces DEEP in the dumped body


# ------------------------------------------------------------------ strategies
ANY_CHAR = st.characters(exclude_categories=())  # every code point, lone surrogates (Cs) included
NASTY = ["", " ", "\x00", "a\x00b", "\ud800", "abc\udfff", "\udc00x", "\u202e", "\ufeff", "w1 w2", "e\u0301",
         "\U0001f600" * 3, "$eq", "..", "a.b", "\n", "NaN"]
TEXT = st.one_of(st.text(ANY_CHAR, max_size=24), st.sampled_from(NASTY), st.integers(200, 4000).map(lambda n: "x" * n))
NUMBERS = st.one_of(st.integers(), st.floats(), st.sampled_from(
    [math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324, 2 ** 63, -(2 ** 63) - 1, 10 ** 400, -(10 ** 40), 0, -1]))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, st.just(DEEP))
JSON = st.recursive(SCALARS, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(TEXT, c, max_size=4)),
                    max_leaves=10)
DEPTH = st.sampled_from([0, 0, 0, 40, 900, 5000, 100_000])
FIELDS = st.one_of(st.sampled_from(["n", "lang", "tags", "a.b", "a", "missing", "n\n", "$and", "$eq", "", "a..b"]),
                   TEXT)
OPS = st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$and", "$or", "$not", "$regex",
                       "$exists", "eq", ""])
LEAF = st.one_of(st.builds(lambda f, v: {f: v}, FIELDS, JSON), st.builds(lambda f, o, v: {f: {o: v}}, FIELDS, OPS, JSON))
WHERE = st.one_of(JSON, st.recursive(LEAF, lambda c: st.one_of(
    st.builds(lambda o, xs: {o: xs}, st.sampled_from(["$and", "$or", "$not", "$nor"]), st.lists(c, max_size=3)),
    st.dictionaries(FIELDS, c, max_size=2)), max_leaves=8),
    st.builds(lambda f, o, v: {f: {o: v}}, st.sampled_from(["n", "a.b", "lang"]), OPS, NUMBERS),
    st.sampled_from([17, 40, 300]).map(lambda n: nested_where(n)),
    st.sampled_from([257, 2000]).map(lambda n: {"$or": [{"n": {"$ne": i}} for i in range(n)]}))
MODEL = st.one_of(st.sampled_from(["tiny", "tiny-sparse", "tiny-ce", "tiny-cls", "nope"]), JSON)
TEXTS = st.one_of(TEXT, st.lists(TEXT, max_size=5), st.lists(st.integers(), max_size=5),
                  st.lists(st.lists(st.integers(-5, 10 ** 12), max_size=4), max_size=3), JSON)


def nested_where(depth: int) -> dict:
    """{"$and": [{"$or": [... {"n": 1} ...]}]} nested `depth` levels deep (built without recursion)."""
    where: dict = {"n": 1}
    for i in range(depth):
        where = {"$and" if i % 2 else "$or": [where, {"lang": "en"}]}
    return where


def shaped(fields: dict, required: tuple = ()) -> st.SearchStrategy:
    """A dict with a random subset of `fields` (name -> strategy; `required` kept more often), random extra keys."""
    opt = {k: v for k, v in fields.items() if k not in required}
    core = st.fixed_dictionaries({k: fields[k] for k in required}, optional=opt)
    extra = st.dictionaries(TEXT, JSON, max_size=2)
    return st.one_of(core, core, core, st.builds(lambda a, b: {**b, **a}, core, extra), JSON)


def bodies(method: str, path: str, fields: dict, required: tuple = ()) -> st.SearchStrategy:
    return st.builds(lambda b, d: Req(method, path, b, d), shaped(fields, required), DEPTH)


DOCUMENT = shaped({"id": st.one_of(TEXT, st.sampled_from(["s1", "new"]), JSON), "text": TEXTS,
                   "metadata": st.one_of(st.dictionaries(TEXT, JSON, max_size=4), JSON)}, ("text",))
DOCS = st.one_of(st.lists(DOCUMENT, max_size=4), JSON)
TRUNC = {"truncate": JSON, "truncation_direction": st.one_of(st.sampled_from(["Left", "Right"]), JSON)}
NAME = st.one_of(st.sampled_from(["fz", "fz.", "fz\n", "none", "..", "a" * 200]), TEXT)


def openai_embeddings():
    return bodies("POST", "/v1/embeddings", {"model": MODEL, "input": TEXTS, "encoding_format": JSON,
                                             "dimensions": NUMBERS, "user": JSON}, ("model", "input"))


def ollama_embed():
    return bodies("POST", "/api/embed", {"model": MODEL, "input": TEXTS, "truncate": JSON, "options": JSON,
                                         "keep_alive": JSON, "dimensions": NUMBERS}, ("model", "input"))


def ollama_embeddings():
    return bodies("POST", "/api/embeddings", {"model": MODEL, "prompt": TEXTS, "options": JSON}, ("model", "prompt"))


def tei(path: str, **fields):
    return bodies("POST", path, {"model": MODEL, **TRUNC, **fields}, tuple(k for k in fields if k != "model"))


def create_bodies():
    return bodies("POST", "/collections", {"name": NAME, "model": MODEL, "index": st.one_of(st.sampled_from(
        ["Flat", "HNSW8", "HNSW-5", "IVF4,Flat", "PQ3", ""]), JSON), "metric": JSON, "kinds": JSON,
        "late_index": JSON}, ("name",))


def _quoted(text: str) -> str:
    """`text` percent-encoded for a URL path; a lone surrogate goes as its (invalid) UTF-8-style bytes."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def collection_path(suffix: str) -> st.SearchStrategy:
    return st.one_of(st.just(f"/collections/fz{suffix}"), st.builds(lambda n: f"/collections/{_quoted(n)}"
                                                                              f"{suffix}", NAME))


def writes(method: str):
    return st.builds(lambda p, b, d: Req(method, p, b, d), collection_path("/documents"),
                     shaped({"documents": DOCS}, ("documents",)), DEPTH)


def deletes():
    return st.builds(lambda p, b, d: Req("POST", p, b, d), collection_path("/documents/delete"),
                     shaped({"ids": st.one_of(st.lists(TEXT, max_size=3), JSON), "where": WHERE}), DEPTH)


def searches():
    lists = st.sampled_from(["vector", "keyword", "sparse", "late", "hybrid", "nope"])
    return st.builds(lambda p, b, d: Req("POST", p, b, d), collection_path("/search"), shaped({
        "query": TEXTS, "k": NUMBERS, "mode": st.one_of(lists, JSON), "modes": st.one_of(st.lists(lists), JSON),
        "fusion": JSON, "weights": st.one_of(st.dictionaries(lists, NUMBERS), JSON), "alpha": NUMBERS,
        "where": WHERE, "rerank": JSON, "rerank_top": NUMBERS, "rerank_model": MODEL}, ("query",)), DEPTH)


def similars():
    return st.builds(lambda p, b, d: Req("POST", p, b, d), collection_path("/similar"), shaped(
        {"id": st.one_of(st.sampled_from(["s1", "s2"]), TEXT, JSON), "k": NUMBERS, "where": WHERE}, ("id",)), DEPTH)


def gets():
    doc = st.builds(lambda p, i: Req("GET", f"{p}/{_quoted(i)}"), collection_path("/documents"),
                    st.one_of(TEXT, st.just("s1")))
    return st.one_of(doc, st.builds(lambda p: Req("GET", p), collection_path("/stats")),
                     st.builds(lambda p: Req("GET", p), collection_path("")))


# ------------------------------------------------------------------ the servers
@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """The tiny models every server here serves: a random BERT (dense; "sparse" through SparseMiniLM), a
    one-label cross-encoder and a three-label classifier."""
    from encoderkit.tasks.rerank import CrossEncoder

    enc = encoderkit.load(str(tiny_family_folder("bert", tmp_path_factory.mktemp("tiny"))))
    return {"tiny": enc, "tiny-sparse": SparseMiniLM(enc),
            "tiny-ce": CrossEncoder.load(tiny_cross_encoder(tmp_path_factory.mktemp("ce"))),
            "tiny-cls": CrossEncoder.load(tiny_classifier(tmp_path_factory.mktemp("cls")))}


@contextmanager
def _live(models: dict, store: str, where: Callable[[str], object]):
    """A LiveServer over `store` with collection fz (SEED_DOCS) and a kept-alive connection; `where(name)` is how
    a fresh handle opens one of its collections."""
    cfg = ServeConfig(store=store, max_inputs=64, max_queue=256, max_body_bytes=MAX_BODY)
    metrics = Metrics()
    reg = ModelRegistry()
    for name in ("tiny", "tiny-sparse"):
        reg.add(EmbeddingModel(name, models[name], cfg.limits, metrics))
    for name in ("tiny-ce", "tiny-cls"):
        reg.add_reranker(RerankModel(name, models[name], cfg.limits, metrics))
    with LiveServer(create_app(cfg, registry=reg, metrics=metrics)) as srv:
        srv.store, srv.state, srv.where = store, srv.app.state.server, where
        assert httpx.post(srv.url + "/collections", json={"name": "fz", "model": "tiny"}).status_code == 201
        r = httpx.post(srv.url + "/collections/fz/documents", json={"documents": SEED_DOCS})
        assert r.status_code == 200, r.text
        srv.conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
        yield srv
        srv.conn.close()


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    """The server with an embedded store (a folder)."""
    store = str(tmp_path_factory.mktemp("store"))
    with _live(models, store, lambda name: os.path.join(store, name)) as srv:
        yield srv


@pytest.fixture(scope="module", params=["embedded", "pgvector"])
def store_server(request, models):
    """A server for the collection routes: the embedded one, or one over a fresh PostgreSQL database."""
    if request.param == "embedded":
        yield request.getfixturevalue("server")
        return
    psycopg = pytest.importorskip("psycopg")
    base = request.getfixturevalue("pg_url")
    db = unique_name("fz")
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {db}")
    parts = urlsplit(base)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))
    try:
        with _live(models, url, lambda name: collection_url(url, name)) as srv:
            yield srv
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {db} WITH (FORCE)")


def _names(srv) -> set[str]:
    """What the store holds: the folder's entries (any leftover counts), or the database's collections."""
    if srv.state.collections.pg:
        return set(srv.state.collections.names())
    return set(os.listdir(srv.store))


def _encode(req: Req) -> bytes:
    """The body as bytes: json.dumps writes NaN/Infinity as such, lone surrogates as \\ud800 escapes."""
    text = json.dumps(req.body)
    if req.deep:
        text = text.replace(json.dumps(DEEP), "[" * req.deep + "1" + "]" * req.deep)
    return text.encode()


def _send(server, req: Req, data: bytes | None = None) -> tuple[int, object]:
    """Send `req` (or the raw bytes `data`) on the kept-alive connection, reopened when the server closed it (idle
    or after an error); returns (status, parsed body)."""
    if data is None and req.method != "GET":
        data = _encode(req)
    for attempt in range(2):
        try:
            server.conn.request(req.method, req.path, body=data, headers={"Content-Type": "application/json"})
            resp = server.conn.getresponse()
            raw = resp.read()
            break
        except (http.client.HTTPException, ConnectionError):
            server.conn.close()
            server.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
            if attempt:
                raise
    if resp.will_close:
        server.conn.close()
        server.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        return resp.status, json.loads(raw) if raw else None
    except ValueError:
        raise AssertionError(f"{req.path}: {resp.status} with a body that is not JSON: {raw[:200]!r}") from None


def _check_answer(req: Req, status: int, out: object) -> None:
    """A success, or a 4xx in the route's API format; never a 5xx, never TEI's 424 (a model failure) except where
    TEI itself answers 424: a model asked for an output it does not have."""
    api = api_of(req.path)
    deliberate = status == 424 and any(m in str(out) for m in DELIBERATE_424)
    assert status < 500 and (status != 424 or deliberate), \
        f"{req.method} {req.path} -> {status} {out!r:.600} for {req!r:.600}"
    if status < 400:
        return
    if api == "openai":
        assert isinstance(out, dict) and set(out) == {"error"}, out
        err = out["error"]
        assert isinstance(err["message"], str) and err["message"] and err["type"] == "invalid_request_error", out
    elif api == "ollama":
        assert isinstance(out, dict) and set(out) == {"error"} and isinstance(out["error"], str) and out["error"], out
    else:
        assert isinstance(out, dict) and set(out) == {"error", "error_type"} and out["error"], out
    msg = out["error"]["message"] if api == "openai" else out["error"]
    assert "Traceback" not in msg and "internal error" not in msg, msg


def _count(server) -> int:
    return server.state.collections.get("fz").count()


def _check_collection(server) -> None:
    report = server.state.collections.get("fz").check()
    assert report["ok"], report


def _run(server, req: Req) -> tuple[int, object]:
    status, out = _send(server, req)
    _check_answer(req, status, out)
    return status, out


# ------------------------------------------------------------------ model routes
def _model_route(strategy: st.SearchStrategy, *examples: Req):
    @FUZZ
    @given(req=strategy)
    def test(server, req: Req) -> None:
        _run(server, req)
    for ex in examples:
        test = example(req=ex)(test)
    return test


test_openai_embeddings_never_5xx = _model_route(
    openai_embeddings(),
    # found by a full run: the 404's message quotes the unknown model, and a lone surrogate in it made a 500
    Req("POST", "/v1/embeddings", {"model": "\ud800", "input": ""}))
test_ollama_embed_never_5xx = _model_route(ollama_embed())
test_ollama_embeddings_never_5xx = _model_route(ollama_embeddings())
test_tei_embed_never_5xx = _model_route(tei("/embed", inputs=TEXTS, normalize=JSON, prompt_name=JSON,
                                            dimensions=NUMBERS))
test_tei_embed_sparse_never_5xx = _model_route(tei("/embed_sparse", inputs=TEXTS, prompt_name=JSON))
test_tei_embed_all_never_5xx = _model_route(tei("/embed_all", inputs=TEXTS, prompt_name=JSON))
test_tei_rerank_never_5xx = _model_route(tei("/rerank", query=TEXTS, texts=TEXTS, raw_scores=JSON, return_text=JSON))
test_tei_tokenize_never_5xx = _model_route(tei("/tokenize", inputs=TEXTS, add_special_tokens=JSON, prompt_name=JSON))
test_tei_decode_never_5xx = _model_route(tei("/decode", ids=TEXTS, skip_special_tokens=JSON))
test_tei_similarity_never_5xx = _model_route(tei("/similarity", inputs=st.one_of(shaped(
    {"source_sentence": TEXTS, "sentences": TEXTS}, ("source_sentence", "sentences")), JSON), prompt_name=JSON))
test_tei_predict_never_5xx = _model_route(tei("/predict", inputs=st.one_of(TEXTS, st.lists(st.lists(TEXT, max_size=3),
                                                                                             max_size=3)),
                                              raw_scores=JSON))


# ------------------------------------------------------------------ collection routes
@FUZZ
@given(req=create_bodies())
def test_create_collection_never_5xx_and_refusals_create_nothing(store_server, req: Req) -> None:
    server = store_server
    before = _names(server)
    status, out = _run(server, req)
    after = _names(server)
    if status >= 400:
        assert after == before, f"a refused create left {after - before}"
        return
    name = out["name"]
    assert after == before | {name} and out["documents"] == 0
    col = Collection.open(server.where(name), create=False)
    assert col.check()["ok"]
    col.close()
    assert _send(server, Req("DELETE", f"/collections/{_quoted(name)}"))[0] == 200


def _write_test(method: str):
    @FUZZ
    @given(req=writes(method))
    def test(store_server, req: Req) -> None:
        server = store_server
        before = _count(server)
        status, out = _run(server, req)
        if status >= 400 or not req.path.endswith("/fz/documents"):
            assert _count(server) == before, "a refused write changed the collection"
        else:
            if method == "POST":
                assert _count(server) == before + len(out["ids"])
            else:  # an upsert replaces the ids that exist and adds the others
                assert before <= _count(server) <= before + len(out["ids"])
        _check_collection(server)
    return test


test_add_documents_never_5xx_and_counts_move_only_on_success = _write_test("POST")
test_upsert_documents_never_5xx_and_counts_move_only_on_success = _write_test("PUT")


@FUZZ
@given(req=deletes())
@example(req=Req("POST", "/collections/fz/documents/delete", {"where": {"n": 10 ** 400}}))  # was 500 (OverflowError)
@example(req=Req("POST", "/collections/fz/documents/delete", {"where": nested_where(40)}))  # was 500 (SQLite parser)
@example(req=Req("POST", "/collections/fz/documents/delete", {"where": nested_where(300)}))  # deep: a 4xx
@example(req=Req("POST", "/collections/fz/documents/delete", {"ids": ["s1\x00"]}))  # was 503 on pgvector (NUL)
def test_delete_documents_never_5xx_and_deletes_what_it_reports(store_server, req: Req) -> None:
    server = store_server
    before = _count(server)
    status, out = _run(server, req)
    if status >= 400 or not req.path.endswith("/fz/documents/delete"):
        assert _count(server) == before, "a refused delete changed the collection"
    else:
        assert _count(server) == before - out["deleted"]
    _check_collection(server)
    if _count(server) < len(SEED_DOCS):  # keep something to search, filter and delete
        _send(server, Req("PUT", "/collections/fz/documents", {"documents": SEED_DOCS}))


@FUZZ
@given(req=searches())
@example(req=Req("POST", "/collections/fz/search", {"query": "w1", "where": {"n": 10 ** 400}}))  # was 500 (OverflowError)
@example(req=Req("POST", "/collections/fz/search", {"query": "w1", "where": {"n": {"$in": [2 ** 63]}},
                                                   "mode": "keyword"}))  # was 500 (OverflowError)
@example(req=Req("POST", "/collections/fz/search", {"query": "w1", "where": nested_where(40)}))  # was 500: SQLite's
@example(req=Req("POST", "/collections/fz/search", {"query": "w1", "mode": "hybrid",  # parser stack, expression depth
                                                   "where": {"$or": [{"n": {"$ne": i}} for i in range(2000)]}}))
@example(req=Req("POST", "/collections/fz/search", {"query": "w1", "rerank": True, "rerank_model": "nope"}))  # was 424
@example(req=Req("POST", "/collections/fz/search", {"query": "w1", "where": {"lang": "e\x00n"}}))  # was 503 on
@example(req=Req("POST", "/collections/fz/search", {"query": "w1\x00w2", "mode": "keyword"}))  # pgvector: NUL
def test_search_never_5xx(store_server, req: Req) -> None:
    _run(store_server, req)


@FUZZ
@given(req=similars())
@example(req=Req("POST", "/collections/fz/similar", {"id": "s1", "where": {"n": -(10 ** 30)}}))  # was 500 (Overflow)
@example(req=Req("POST", "/collections/fz/similar", {"id": "s1", "where": nested_where(300)}))  # deep: a 4xx
@example(req=Req("POST", "/collections/fz/similar", {"id": "\x00"}))  # was 503 on pgvector (NUL)
def test_similar_never_5xx(store_server, req: Req) -> None:
    _run(store_server, req)


@FUZZ
@given(req=gets())
@example(req=Req("GET", "/collections/fz/documents/%00"))  # was 503 on pgvector (the driver refused NUL)
def test_stats_describe_and_get_never_5xx(store_server, req: Req) -> None:
    status, _ = _run(store_server, req)
    if req.path in ("/collections/fz/stats", "/collections/fz"):
        assert status == 200


@FUZZ
@given(raw=st.one_of(st.binary(max_size=64), st.sampled_from([b"", b"{", b"[" * 100_000, b'{"a": 1e999999}',
                                                              b"\xff\xfe{}", b'{"input": "\xed\xa0\x80"}'])),
       path=st.sampled_from(["/v1/embeddings", "/api/embed", "/api/embeddings", "/embed", "/rerank", "/predict",
                             "/collections", "/collections/fz/documents", "/collections/fz/search",
                             "/collections/fz/similar", "/collections/fz/documents/delete"]))
def test_bodies_that_are_not_json_are_4xx(server, raw: bytes, path: str) -> None:
    status, out = _send(server, Req("POST", path), raw)
    assert status >= 400
    _check_answer(Req("POST", path), status, out)


def test_collection_opens_and_checks_after_the_fuzzing(store_server) -> None:
    """After every route was fuzzed: a fresh handle opens the collection, it checks, its filters still run."""
    server = store_server
    col = Collection.open(server.where("fz"), create=False)
    try:
        assert col.check()["ok"] and col.count() == _count(server)
        col.count({"n": 1})
        col.search("w1", 3, where={"$or": [{"n": {"$gte": 2}}, {"lang": "en"}]})
    finally:
        col.close()
    assert _send(server, Req("GET", "/collections/fz/stats"))[0] == 200
