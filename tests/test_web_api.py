"""The web page's server side, over real HTTP on loopback with the real default model: the page and its files
(no key needed), and the JSON routes it uses (stats, map, locate, more-like-this), checked against
independent computations (scikit-learn's PCA, cosine similarities from the model)."""
from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

import encoderkit  # noqa: E402
from encoderkit.serve.app import create_app  # noqa: E402
from encoderkit.serve.auth import KeyStore  # noqa: E402
from encoderkit.serve.metrics import Metrics  # noqa: E402
from encoderkit.serve.models import EmbeddingModel, ModelRegistry  # noqa: E402
from encoderkit.serve.state import ServeConfig  # noqa: E402
from encoderkit.serve.testing import LiveServer  # noqa: E402
from encoderkit.serve.web import mount_web, summarize_fields  # noqa: E402

# A small asset library (the seeds' story): text descriptions with metadata, one with an image thumbnail.
ASSETS = [
    ("hike-sunrise", "A young couple hiking a mountain ridge at sunrise, backpacks on, arms raised in triumph.",
     {"kind": "photo", "theme": "outdoor", "year": 2023}),
    ("surf-dawn", "Surfer carrying a board across an empty beach at dawn, golden light, freedom and adventure.",
     {"kind": "photo", "theme": "outdoor", "year": 2022}),
    ("camp-stars", "Friends around a campfire under the stars next to a lake, tents glowing behind them.",
     {"kind": "video", "theme": "outdoor", "year": 2021}),
    ("office-meeting", "Business team in a glass meeting room reviewing quarterly charts on a screen.",
     {"kind": "photo", "theme": "corporate", "year": 2023}),
    ("laptop-desk", "Close-up of hands typing on a laptop at a tidy wooden desk with a coffee mug.",
     {"kind": "photo", "theme": "corporate", "year": 2020}),
    ("handshake", "Two executives shaking hands in a modern lobby after closing a deal.",
     {"kind": "video", "theme": "corporate", "year": 2022}),
    ("pasta-kitchen", "Chef tossing fresh pasta in a pan in a busy restaurant kitchen.",
     {"kind": "photo", "theme": "food", "year": 2021}),
    ("salad-bowl", "Overhead shot of a colourful salad bowl with avocado, quinoa and lemon.",
     {"kind": "photo", "theme": "food", "year": 2023}),
    ("coffee-pour", "Barista pouring latte art into a ceramic cup, slow motion.",
     {"kind": "video", "theme": "food", "year": 2020}),
    ("city-night", "Neon-lit city street at night in the rain, taxis and reflections.",
     {"kind": "photo", "theme": "urban", "year": 2022}),
    ("subway-rush", "Commuters rushing through a crowded subway station during rush hour.",
     {"kind": "video", "theme": "urban", "year": 2021}),
    ("skyline-drone", "Drone flight over a downtown skyline at sunset with glass towers.",
     {"kind": "video", "theme": "urban", "year": 2023}),
    ("dog-park", "A golden retriever running with a ball in a sunny park.",
     {"kind": "photo", "theme": "pets", "year": 2022}),
    ("cat-window", "A tabby cat sleeping on a windowsill in afternoon light.",
     {"kind": "illustration", "theme": "pets", "year": 2020}),
]


def thumbnail_uri() -> str:
    """A small real PNG (a sea-and-sand gradient) as a data: URI."""
    from PIL import Image

    img = Image.new("RGB", (48, 48))
    img.putdata([(30 + 4 * y, 120 + 2 * y, 200 - 3 * y) if y < 30 else (230, 200, 140) for y in range(48)
                 for _ in range(48)])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def asset_documents() -> list[dict]:
    docs = [{"id": i, "text": t, "metadata": dict(m)} for i, t, m in ASSETS]
    docs.append({"id": "beach-umbrella", "text": "Watercolour illustration of a striped beach umbrella by the waves.",
                 "metadata": {"kind": "illustration", "theme": "outdoor", "year": 2021, "image": thumbnail_uri()}})
    return docs


def start_server(enc, tmp_path_factory, keys: bool = True, rerank_path=None):
    """A live server (real model, API keys, a store, optionally a cross-encoder) with the web page mounted;
    returns (LiveServer, keys)."""
    key_file = tmp_path_factory.mktemp("keys") / "keys.json"
    store = KeyStore(key_file)
    k = {role: store.add(role=role)[0] for role in ("read", "admin")}
    k["other"] = store.add(role="read", collections=["other"], name="other only")[0]
    cfg = ServeConfig(api_keys=str(key_file) if keys else None, store=str(tmp_path_factory.mktemp("store")))
    metrics = Metrics()
    reg = ModelRegistry()
    reg.add(EmbeddingModel("all-MiniLM-L6-v2", enc, cfg.limits, metrics))
    if rerank_path is not None:
        from encoderkit.serve.models import RerankModel
        from encoderkit.tasks.rerank import CrossEncoder

        reg.add_reranker(RerankModel("tiny-ce", CrossEncoder.load(rerank_path), cfg.limits, metrics))
    app = create_app(cfg, registry=reg, metrics=metrics)
    mount_web(app)
    return LiveServer(app), k


def make_collection(url: str, admin_key: str, name: str, docs: list[dict]) -> None:
    h = {"Authorization": f"Bearer {admin_key}"}
    r = httpx.post(url + "/collections", json={"name": name}, headers=h, timeout=60)
    assert r.status_code == 201, r.text
    r = httpx.post(url + f"/collections/{name}/documents", json={"documents": docs}, headers=h, timeout=120)
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def enc():
    return encoderkit.load("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def live(enc, tmp_path_factory):
    srv, keys = start_server(enc, tmp_path_factory)
    with srv:
        make_collection(srv.url, keys["admin"], "assets", asset_documents())
        srv.keys = keys
        yield srv


def _get(live, path, key="read", **kw):
    h = {"Authorization": f"Bearer {live.keys[key]}"} if key else {}
    return httpx.get(live.url + path, headers=h, timeout=60, **kw)


def _post(live, path, body, key="read"):
    h = {"Authorization": f"Bearer {live.keys[key]}"} if key else {}
    return httpx.post(live.url + path, json=body, headers=h, timeout=60)


# ------------------------------------------------------------------ the page itself
def test_page_is_served_to_browsers_without_a_key_and_api_clients_keep_the_text_root(live):
    r = httpx.get(live.url + "/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<script src="ui/app.js"' in r.text and "<title>encoderkit" in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    for name, ctype in (("app.js", "text/javascript"), ("map.js", "text/javascript"), ("style.css", "text/css")):
        f = httpx.get(live.url + "/ui/" + name)
        assert f.status_code == 200 and f.headers["content-type"].startswith(ctype) and len(f.content) > 500
    assert httpx.head(live.url + "/ui/app.js").status_code == 200
    missing = httpx.get(live.url + "/ui/../../etc/passwd")
    assert missing.status_code in (404, 401)  # never a file outside the page
    assert httpx.get(live.url + "/ui/nope.js").status_code == 404
    # an API client (no text/html in Accept) still gets the key check, then the liveness text
    assert httpx.get(live.url + "/").status_code == 401
    r = _get(live, "/")
    assert r.status_code == 200 and "encoderkit is running" in r.text


def test_data_routes_need_a_key_and_a_grant(live):
    for path in ("/collections/assets/stats", "/collections/assets/map"):
        r = _get(live, path, key=None)
        assert r.status_code == 401 and "API key" in r.json()["error"]
        r = _get(live, path, key="other")
        assert r.status_code == 403 and "not granted collection 'assets'" in r.json()["error"]
    r = _post(live, "/collections/assets/similar", {"id": "dog-park"}, key="other")
    assert r.status_code == 403


# ------------------------------------------------------------------ stats
def test_stats_describe_the_collection(live):
    s = _get(live, "/collections/assets/stats").json()
    assert (s["name"], s["documents"], s["model"], s["dim"], s["index"], s["metric"]) == (
        "assets", 15, "sentence-transformers/all-MiniLM-L6-v2", 384, "Flat", "cosine")
    assert s["bytes"] > 10_000 and s["generation"] >= 1 and s["sampled"] == 15
    updated = time.mktime(time.strptime(s["updated"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert abs(updated - time.time()) < 3600
    f = s["fields"]
    assert f["kind"]["type"] == "string" and set(f["kind"]["values"]) == {"photo", "video", "illustration"}
    assert f["kind"]["values"][0] == "photo"  # most frequent first
    assert f["year"] == {"type": "number", "count": 15, "values": [], "min": 2020.0, "max": 2023.0}
    assert f["image"]["values"] == []  # a data URI is not offered as a filter value
    assert s["rerank_models"] == [] and "pca" in s["projection_methods"]


def test_summarize_fields_types_nesting_and_mixed():
    out = summarize_fields([{"a": 1, "b": "x", "c": True, "n": {"d": "y"}}, {"a": 2.5, "b": "x", "c": "no"}, {}])
    assert out["a"] == {"type": "number", "count": 2, "values": [], "min": 1.0, "max": 2.5}
    assert out["b"] == {"type": "string", "count": 2, "values": ["x"]}
    assert out["c"]["type"] == "mixed" and out["n.d"]["values"] == ["y"]


# ------------------------------------------------------------------ map
def test_map_is_the_pca_of_the_stored_vectors(live, enc):
    from sklearn.decomposition import PCA

    m = _get(live, "/collections/assets/map", params={"method": "pca"}).json()
    docs = asset_documents()
    assert m["method"] == "pca" and m["total"] == 15 and len(m["points"]) == 15
    by_id = {p["id"]: p for p in m["points"]}
    assert set(by_id) == {d["id"] for d in docs}
    assert by_id["dog-park"]["metadata"] == {"kind": "photo", "theme": "pets", "year": 2022}
    assert by_id["beach-umbrella"]["metadata"]["image"].startswith("data:image/png;base64,")
    # oracle: scikit-learn's PCA of the same documents embedded by the model directly
    X = enc.encode([d["text"] for d in docs], normalize=True)
    ref = PCA(n_components=2).fit(X)
    Y = ref.transform(X)
    got = np.array([[by_id[d["id"]]["x"], by_id[d["id"]]["y"]] for d in docs])
    for axis in range(2):  # equal up to each axis' sign
        sign = np.sign(got[:, axis] @ Y[:, axis])
        np.testing.assert_allclose(got[:, axis], sign * Y[:, axis], atol=2e-4)
    np.testing.assert_allclose(m["explained_variance"], ref.explained_variance_ratio_, atol=1e-4)


def test_locate_puts_a_document_text_on_its_own_point(live):
    m = _get(live, "/collections/assets/map", params={"method": "pca"}).json()
    p = next(p for p in m["points"] if p["id"] == "camp-stars")
    text = next(d["text"] for d in asset_documents() if d["id"] == "camp-stars")
    for body in ({"query": text, "method": "pca"}, {"id": "camp-stars", "method": "pca"}):
        at = _post(live, "/collections/assets/map/locate", body).json()
        assert abs(at["x"] - p["x"]) < 1e-3 and abs(at["y"] - p["y"]) < 1e-3, (body, at, p)
    at = _post(live, "/collections/assets/map/locate", {"query": "hiking in the mountains", "method": "pca"}).json()
    assert np.isfinite([at["x"], at["y"]]).all()


def test_map_follows_writes_and_refuses_bad_requests(live):
    make_collection(live.url, live.keys["admin"], "growing", asset_documents()[:3])
    assert len(_get(live, "/collections/growing/map", params={"method": "pca"}).json()["points"]) == 3
    h = {"Authorization": f"Bearer {live.keys['admin']}"}
    r = httpx.post(live.url + "/collections/growing/documents", headers=h, timeout=60,
                   json={"documents": [{"id": "new", "text": "A red kite over a windy hill."}]})
    assert r.status_code == 200
    pts = _get(live, "/collections/growing/map", params={"method": "pca"}).json()["points"]
    assert len(pts) == 4 and "new" in {p["id"] for p in pts}
    assert len(_get(live, "/collections/growing/map", params={"limit": 2, "method": "pca"}).json()["points"]) == 2

    r = _get(live, "/collections/nope/map")
    assert r.status_code == 404 and "does not exist" in r.json()["error"]
    r = _get(live, "/collections/assets/map", params={"limit": 0})
    assert r.status_code == 422
    from encoderkit.tasks.projection import umap_available

    if not umap_available():
        r = _get(live, "/collections/assets/map", params={"method": "umap"})
        assert r.status_code == 422 and "umap-learn" in r.json()["error"]
    for body in ({}, {"query": "x", "id": "dog-park"}):
        r = _post(live, "/collections/assets/map/locate", body)
        assert r.status_code == 422 and "exactly one" in r.json()["error"]
    r = _post(live, "/collections/assets/map/locate", {"id": "no-such-doc"})
    assert r.status_code == 404 and "no document 'no-such-doc'" in r.json()["error"]
    httpx.post(live.url + "/collections", json={"name": "empty"}, headers=h, timeout=60)
    r = _get(live, "/collections/empty/map")
    assert r.status_code == 422 and "empty" in r.json()["error"]
    s = _get(live, "/collections/empty/stats").json()
    assert s["documents"] == 0 and s["fields"] == {} and s["updated"]


# ------------------------------------------------------------------ more like this
def test_similar_ranks_by_cosine_to_the_example_and_leaves_it_out(live, enc):
    docs = asset_documents()
    X = enc.encode([d["text"] for d in docs], normalize=True)
    ids = [d["id"] for d in docs]
    i = ids.index("hike-sunrise")
    sims = X @ X[i]
    expected = [ids[j] for j in np.argsort(-sims) if j != i][:5]
    r = _post(live, "/collections/assets/similar", {"id": "hike-sunrise", "k": 5})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert [h["id"] for h in hits] == expected
    np.testing.assert_allclose([h["score"] for h in hits], sorted(sims[[ids.index(e) for e in expected]],
                                                                     reverse=True), atol=1e-4)
    r = _post(live, "/collections/assets/similar", {"id": "hike-sunrise", "k": 20, "where": {"kind": "video"}})
    hits = r.json()["hits"]
    assert hits and all(h["metadata"]["kind"] == "video" for h in hits)
    assert len(hits) == sum(d["metadata"]["kind"] == "video" for d in docs)
    r = _post(live, "/collections/assets/similar", {"id": "missing"})
    assert r.status_code == 404 and "no document 'missing'" in r.json()["error"]
    r = _post(live, "/collections/assets/similar", {"id": "dog-park", "where": {"$bad": 1}})
    assert r.status_code == 422 and "unknown operator" in r.json()["error"]


def test_last_update_is_when_the_data_changed_not_when_the_server_opened_it(tmp_path):
    """(issue 17) Opening a collection makes SQLite's -shm and an empty -wal: they are not an update."""
    import os

    from encoderkit.serve.web import _updated
    from encoderkit.store import Collection
    from store_fakes import FakeEncoder

    with Collection.open(tmp_path / "c", FakeEncoder()) as c:
        c.add(["a note about rivers", "a note about hills"], ids=["r", "h"])
    old = time.time() - 86_400 * 3
    for f in (tmp_path / "c").iterdir():
        os.utime(f, (old, old))
    with Collection.open(tmp_path / "c", FakeEncoder(), create=False) as c:
        c.search("rivers", k=1, mode="hybrid")
        assert {p.name for p in c.path.iterdir()} >= {"collection.db-shm"}  # made now, by this open
        assert _updated(c) == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(old))
        c.add(["a third note"], ids=["t"])
        assert abs(time.mktime(time.strptime(_updated(c), "%Y-%m-%dT%H:%M:%SZ")) - time.timezone - time.time()) < 60

