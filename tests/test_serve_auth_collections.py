"""API keys (401 on every route without one, roles, per-collection grants, never logged) and the
collection routes (create / list / drop, add / upsert / delete, search modes, where, rerank)."""
from __future__ import annotations

import io
import json
import logging
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from encoderkit.cli import main as cli_main  # noqa: E402
from encoderkit.serve.app import check_bind, create_app  # noqa: E402
from encoderkit.serve.auth import KeyStore  # noqa: E402
from encoderkit.serve.metrics import Metrics  # noqa: E402
from encoderkit.serve.models import EmbeddingModel, ModelRegistry, RerankModel  # noqa: E402
from encoderkit.serve.state import ServeConfig  # noqa: E402
from encoderkit.serve.testing import LiveServer  # noqa: E402
from test_serve_clients import shared_encoder, tiny_cross_encoder  # noqa: E402

DOCS = [{"id": "cat", "text": "The cat sat on the mat and purred.", "metadata": {"topic": "pets", "year": 2020}},
        {"id": "dog", "text": "Dogs love long walks in the park.", "metadata": {"topic": "pets", "year": 2023}},
        {"id": "stocks", "text": "Stock markets fell sharply on Monday.", "metadata": {"topic": "finance", "year": 2023}},
        {"id": "tern", "text": "Arctic terns migrate from pole to pole.", "metadata": {"topic": "birds", "year": 2021}}]


@pytest.fixture(scope="module")
def enc():
    return shared_encoder()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    store = KeyStore(tmp_path_factory.mktemp("keys") / "keys.json")
    out = {role: store.add(role=role)[0] for role in ("read", "write", "admin")}
    out["docs_admin"] = store.add(role="admin", collections=["docs"], name="docs only")[0]
    out["file"] = store.path
    return out


@pytest.fixture(scope="module")
def log_buffer():
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s %(args)s"))
    loggers = [logging.getLogger(n) for n in ("", "encoderkit", "uvicorn", "uvicorn.error", "uvicorn.access")]
    old = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield buf
    for lg, lvl in old:
        lg.removeHandler(handler)
        lg.setLevel(lvl)


@pytest.fixture(scope="module")
def server(enc, keys, log_buffer, tmp_path_factory):
    from encoderkit.tasks.rerank import CrossEncoder

    cfg = ServeConfig(api_keys=str(keys["file"]), store=str(tmp_path_factory.mktemp("store")))
    metrics = Metrics()
    reg = ModelRegistry()
    reg.add(EmbeddingModel("all-MiniLM-L6-v2", enc, cfg.limits, metrics))
    ce_path = tiny_cross_encoder(tmp_path_factory.mktemp("ce"))
    reg.add_reranker(RerankModel("tiny-ce", CrossEncoder.load(ce_path), cfg.limits, metrics))
    app = create_app(cfg, registry=reg, metrics=metrics)
    with LiveServer(app, log_level="debug", access_log=True) as srv:
        srv.app, srv.ce = app, CrossEncoder.load(ce_path)
        yield srv


def _h(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


# ------------------------------------------------------------------ auth
def test_every_route_needs_a_key(server, keys):
    spec = httpx.get(server.url + "/openapi.json", headers=_h(keys["read"])).json()
    calls = [(m.upper(), path.replace("{name}", "docs").replace("{model}", "x").replace("{doc_id}", "x"))
             for path, ops in spec["paths"].items() for m in ops]
    calls += [("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/no/such/route")]
    assert len(calls) > 20
    client = httpx.Client(base_url=server.url)
    for method, path in calls:
        for headers in ({}, _h("ek-00000000-not-a-real-key"), {"Authorization": keys["read"]}):
            r = client.request(method, path, json={}, headers=headers)
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"
            body = r.json()
            if path.startswith("/v1/"):
                assert body["error"]["code"] == "invalid_api_key"
            elif path.startswith("/api/"):
                assert set(body) == {"error"}
            else:
                assert body["error_type"] == "Unauthorized"


def test_the_real_clients_authenticate(server, keys, enc):
    openai = pytest.importorskip("openai")
    ollama = pytest.importorskip("ollama")
    ok = openai.OpenAI(base_url=server.url + "/v1", api_key=keys["read"])
    v = ok.embeddings.create(model="all-minilm", input="hello").data[0].embedding
    assert np.abs(np.array(v) - enc.encode("hello")).max() <= 1e-5
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).embeddings.create(
            model="all-minilm", input="x")
    res = ollama.Client(host=server.url, headers=_h(keys["read"])).embed(model="all-minilm", input="hello")
    assert np.abs(np.array(res.embeddings[0]) - enc.encode("hello")).max() <= 1e-5


def test_roles_and_grants(server, keys):
    u = server.url
    # read: no creating, no writing
    r = httpx.post(u + "/collections", json={"name": "docs"}, headers=_h(keys["read"]))
    assert r.status_code == 403 and r.json()["error_type"] == "Forbidden"
    assert httpx.post(u + "/collections", json={"name": "docs"}, headers=_h(keys["write"])).status_code == 403
    assert httpx.post(u + "/collections", json={"name": "docs"}, headers=_h(keys["docs_admin"])).status_code == 201
    r = httpx.post(u + "/collections", json={"name": "secret"}, headers=_h(keys["docs_admin"]))
    assert r.status_code == 403 and "not granted" in r.json()["error"]
    assert httpx.post(u + "/collections", json={"name": "secret"}, headers=_h(keys["admin"])).status_code == 201
    body = {"documents": DOCS[:1]}
    assert httpx.post(u + "/collections/docs/documents", json=body, headers=_h(keys["read"])).status_code == 403
    assert httpx.post(u + "/collections/secret/documents", json=body, headers=_h(keys["write"])).status_code == 200
    # the docs-only key cannot see 'secret', in any way
    for method, path, js in (("GET", "/collections/secret", None), ("POST", "/collections/secret/search", {"query": "x"}),
                             ("GET", "/collections/secret/documents/cat", None),
                             ("DELETE", "/collections/secret", None)):
        r = httpx.request(method, u + path, json=js, headers=_h(keys["docs_admin"]))
        assert r.status_code == 403, (method, path)
    names = [c["name"] for c in httpx.get(u + "/collections", headers=_h(keys["docs_admin"])).json()["collections"]]
    assert names == ["docs"]
    names = [c["name"] for c in httpx.get(u + "/collections", headers=_h(keys["read"])).json()["collections"]]
    assert names == ["docs", "secret"]
    assert httpx.delete(u + "/collections/secret", headers=_h(keys["write"])).status_code == 403
    assert httpx.delete(u + "/collections/secret", headers=_h(keys["admin"])).status_code == 200


def test_keys_never_reach_logs_or_the_key_file(server, keys, log_buffer):
    httpx.post(server.url + "/v1/embeddings", json={"model": "nope", "input": "x"}, headers=_h(keys["admin"]))
    httpx.post(server.url + "/embed", json={"inputs": "x"}, headers=_h("ek-deadbeef-guessed-key-value"))
    httpx.get(server.url + "/info", headers=_h(keys["write"]))
    text = log_buffer.getvalue()
    assert "/v1/embeddings" in text or "embed" in text  # the access log did record the requests
    for k in ("read", "write", "admin", "docs_admin"):
        assert keys[k] not in text
        assert keys[k] not in keys["file"].read_text()
    assert "guessed-key-value" not in text


def test_revoked_key_stops_working(server, tmp_path):
    store = KeyStore(server.app.state.server.keys.path)
    key, rec = store.add(role="read", name="temp")
    time.sleep(1.1)
    assert httpx.get(server.url + "/health", headers=_h(key)).status_code == 200
    assert store.revoke(rec.id)
    time.sleep(1.1)
    assert httpx.get(server.url + "/health", headers=_h(key)).status_code == 401


def test_refuses_public_bind_without_keys(tmp_path, capsys):
    with pytest.raises(PermissionError, match="without API keys"):
        check_bind(ServeConfig(host="0.0.0.0"))
    check_bind(ServeConfig(host="0.0.0.0", insecure=True))
    check_bind(ServeConfig(host="0.0.0.0", api_keys=str(tmp_path / "k.json")))
    check_bind(ServeConfig(host="127.0.0.1"))
    check_bind(ServeConfig(host="::1"))
    assert cli_main(["serve", "--host", "0.0.0.0", "--port", "9"]) == 2
    assert "--insecure" in capsys.readouterr().err


def test_keys_cli(tmp_path, capsys):
    f = str(tmp_path / "keys.json")
    assert cli_main(["keys", "add", "--file", f, "--role", "write", "--collections", "a,b", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["key"].startswith("ek-") and made["collections"] == ["a", "b"]
    assert made["key"] not in open(f).read()
    assert KeyStore(f).verify(made["key"]).role == "write"
    assert cli_main(["keys", "list", "--file", f, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in listed] == [made["id"]] and "key" not in listed[0]
    assert cli_main(["keys", "revoke", "--file", f, made["id"]]) == 0
    assert KeyStore(f).verify(made["key"]) is None
    assert cli_main(["keys", "revoke", "--file", f, "nope"]) == 2


# ------------------------------------------------------------------ collections
def test_collection_lifecycle_and_search(server, keys, enc):
    u, H = server.url, _h(keys["admin"])
    r = httpx.post(u + "/collections", json={"name": "notes"}, headers=H)
    assert r.status_code == 201 and r.json()["dim"] == 384 and r.json()["documents"] == 0
    assert httpx.post(u + "/collections", json={"name": "notes"}, headers=H).status_code == 409
    assert httpx.post(u + "/collections", json={"name": "../etc"}, headers=H).status_code == 422
    r = httpx.post(u + "/collections/notes/documents", json={"documents": DOCS}, headers=H)
    assert r.status_code == 200 and r.json()["ids"] == [d["id"] for d in DOCS]
    r = httpx.post(u + "/collections/notes/documents", json={"documents": DOCS[:1]}, headers=H)
    assert r.status_code == 409  # add refuses an existing id
    assert httpx.get(u + "/collections/notes", headers=H).json()["documents"] == 4

    def search(**body):
        r = httpx.post(u + "/collections/notes/search", json=body, headers=H)
        assert r.status_code == 200, r.text
        return r.json()["hits"]

    hits = search(query="a kitten on a rug", k=2)
    assert hits[0]["id"] == "cat" and len(hits) == 2
    want = float(enc.encode("a kitten on a rug") @ enc.encode(DOCS[0]["text"]))
    assert abs(hits[0]["score"] - want) <= 1e-5
    assert search(query="markets", mode="keyword")[0]["id"] == "stocks"
    assert search(query="birds migrating", mode="hybrid")[0]["id"] == "tern"
    assert [h["id"] for h in search(query="animals", k=4, where={"topic": "pets", "year": {"$gte": 2021}})] == ["dog"]
    r = httpx.post(u + "/collections/notes/search", json={"query": "x", "where": {"year": {"$bogus": 1}}}, headers=H)
    assert r.status_code == 422 and "$bogus" in r.json()["error"]

    hits = search(query="pets", k=3, rerank=True, rerank_top=4)
    texts = {d["id"]: d["text"] for d in DOCS}
    logits = server.ce.score("pets", [texts[h["id"]] for h in hits])
    assert all(abs(h["scores"]["rerank"] - 1 / (1 + np.exp(-z))) <= 1e-5 for h, z in zip(hits, logits))
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    plain = search(query="pets", k=4)
    fused = search(query="pets", k=4, rerank=True, rerank_top=4, rerank_weight=0.0)  # the first stage's order
    assert [h["id"] for h in fused] == [h["id"] for h in plain]
    assert all(h["scores"]["first_stage"] == p["score"] for h, p in zip(fused, plain))
    r = httpx.post(u + "/collections/notes/search", json={"query": "pets", "rerank": True, "rerank_weight": 2},
                   headers=H)
    assert r.status_code == 422 and "rerank_weight" in r.text

    r = httpx.put(u + "/collections/notes/documents",
                  json={"documents": [{"id": "cat", "text": "Cats chase mice at night.", "metadata": {"topic": "pets"}}]},
                  headers=H)
    assert r.status_code == 200
    assert httpx.get(u + "/collections/notes/documents/cat", headers=H).json()["text"] == "Cats chase mice at night."
    r = httpx.post(u + "/collections/notes/documents/delete", json={"where": {"topic": "finance"}}, headers=H)
    assert r.json() == {"deleted": 1}
    assert httpx.post(u + "/collections/notes/documents/delete", json={"ids": ["dog", "nope"]}, headers=H).json() == {"deleted": 1}
    assert httpx.get(u + "/collections/notes/documents/dog", headers=H).status_code == 404
    assert httpx.get(u + "/collections/notes", headers=H).json()["documents"] == 2
    assert httpx.delete(u + "/collections/notes", headers=H).json() == {"dropped": "notes"}
    r = httpx.post(u + "/collections/notes/search", json={"query": "x"}, headers=H)
    assert r.status_code == 404 and r.json()["error_type"] == "NotFound"
