"""Documents, not chunks, over HTTP and on the page (issue 17): a chunked collection of real SciFact abstracts
searched through the API returns each document once with its best passage and readable part scores; "more like
this" leaves the document's own chunks out; in headless Chromium a card's heading is the title, its passage
starts and ends on whole words, highlighting skips stopwords and one-letter words, hybrid cards show the fused
rank with cosine and BM25 beside it, and counts say documents and chunks. Screenshots go to docs/screenshots/."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")

import encoderkit  # noqa: E402
from conftest import data_path  # noqa: E402
from test_web_api import start_server  # noqa: E402

CHROMIUM = os.environ.get("ENCODERKIT_CHROMIUM", "/usr/bin/chromium")
QUERY = "the effect of smoking on a lung cancer risk"
SHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


def _abstracts(n: int) -> list[dict]:
    """The first n SciFact abstracts that speak of cancer (long enough to be split into several chunks)."""
    out = []
    with open(data_path("scifact", "corpus.jsonl"), encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if "cancer" in d["text"] and len(d["text"]) > 900:
                out.append({"id": d["_id"], "title": d["title"], "text": d["text"]})
            if len(out) == n:
                break
    return out


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from encoderkit.store import Collection

    enc = encoderkit.load("all-MiniLM-L6-v2")
    srv, _ = start_server(enc, tmp_path_factory, keys=False)
    src = tmp_path_factory.mktemp("src") / "papers.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in _abstracts(24)), encoding="utf-8")
    col = Collection.open(srv.app.state.server.collections.root / "papers", enc)
    col.ingest(src, chunk_tokens=64, overlap=16, progress=False)
    col.close()
    with srv:
        yield srv


def _search(live, **body) -> dict:
    r = httpx.post(live.url + "/collections/papers/search", json={"query": QUERY, **body}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


# ------------------------------------------------------------------ the API
def test_api_search_returns_documents_once_with_their_best_passage(live):
    chunks = _search(live, k=12, mode="hybrid", group_by_document=False)["hits"]
    assert len({h["metadata"]["parent"] for h in chunks}) < 12, "premise: the top chunks repeat documents"
    out = _search(live, k=12, mode="hybrid")
    docs = out["hits"]
    assert len(docs) == 12 and len({h["id"] for h in docs}) == 12 and not any("#" in h["id"] for h in docs)
    for h in docs:
        assert h["chunk_id"].startswith(h["id"] + "#") and h["matched_chunks"] >= 1
        assert set(h["scores"]) >= {"fused"} and set(h["scores"]) & {"vector", "keyword"}
        assert -1 <= h["scores"].get("vector", 0) <= 1
    assert out["score_names"]["vector"] == "cosine" and out["score_names"]["keyword"] == "BM25"
    assert out["score_names"]["fused"] == "RRF (k=60)"


def test_api_more_like_this_leaves_out_the_documents_own_chunks(live):
    doc = _search(live, k=1, mode="vector")["hits"][0]
    r = httpx.post(live.url + "/collections/papers/similar", json={"id": doc["id"], "k": 10}, timeout=60)
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert len(hits) == 10 and doc["id"] not in {h["id"] for h in hits}
    assert all(h["metadata"].get("parent") != doc["id"] for h in hits) and len({h["id"] for h in hits}) == 10
    r = httpx.post(live.url + "/collections/papers/similar", json={"id": "nope"}, timeout=60)
    assert r.status_code == 404 and "no document 'nope'" in r.text
    # the map places a document found by its id (not a stored row: its chunks' mean), as after "more like this"
    r = httpx.post(live.url + "/collections/papers/map/locate", json={"id": doc["id"], "method": "pca"}, timeout=120)
    assert r.status_code == 200 and set(r.json()) == {"x", "y"}, r.text


def test_api_get_takes_the_document_id_a_search_returns(live):
    """GET /documents/{id} of a chunked document: the document put back together from its overlapping chunks (it
    was a 404: only chunk ids were stored rows); a chunk id still gives that chunk."""
    doc = _search(live, k=1, mode="vector")["hits"][0]
    r = httpx.get(live.url + f"/collections/papers/documents/{doc['id']}", timeout=60)
    assert r.status_code == 200, r.text
    got = r.json()
    original = next(d for d in _abstracts(24) if d["id"] == doc["id"])
    assert got["id"] == doc["id"] and got["text"] == original["text"]
    assert got["metadata"]["title"] == original["title"] and got["metadata"]["chunks"] > 1
    r = httpx.get(live.url + f"/collections/papers/documents/{doc['chunk_id'].replace('#', '%23')}", timeout=60)
    assert r.status_code == 200 and r.json()["id"] == doc["chunk_id"] and r.json()["text"] in original["text"]


def test_stats_and_listing_count_documents_and_chunks(live):
    s = httpx.get(live.url + "/collections/papers/stats", timeout=120).json()
    assert s["documents"] == 24 and s["chunks"] > 24
    listed = {c["name"]: c for c in httpx.get(live.url + "/collections", timeout=60).json()["collections"]}
    assert (listed["papers"]["documents"], listed["papers"]["chunks"]) == (24, s["chunks"])


# ------------------------------------------------------------------ the page
if not os.path.exists(CHROMIUM):
    pytest.skip(f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need `pip install playwright`")


@pytest.fixture(scope="module")
def page(live, tmp_path_factory):
    from test_web_ux import ARGS

    SHOTS.mkdir(parents=True, exist_ok=True)
    errors = []
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path_factory.mktemp("profile")), executable_path=CHROMIUM,
                                                   headless=True, args=ARGS, viewport={"width": 1280, "height": 1000})
        ctx.set_default_timeout(30_000)
        pg = ctx.new_page()
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto(live.url + "/?collection=papers")
        pg.wait_for_selector("#stats [data-stat=documents]")
        pg.evaluate("() => EK.ready")
        yield pg
        ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _run(pg, query: str, mode: str, chunks: bool = False) -> list[dict]:
    pg.check(f"input[name=mode][value={mode}]")
    pg.set_checked("#chunks", chunks)
    pg.fill("#query", query)
    with pg.expect_response(lambda r: r.url.endswith("/search")):
        pg.press("#query", "Enter")
    pg.wait_for_function("() => !document.querySelector('#results-view').classList.contains('busy')")
    return pg.evaluate("""() => [...document.querySelectorAll('#results .card')].map(c => ({
        id: c.dataset.id, title: c.querySelector('.doc-title').textContent,
        chip: c.querySelector('.doc-id')?.textContent || null, text: c.querySelector('.text').textContent,
        scores: [...c.querySelectorAll('.score')].map(s => s.textContent),
        marks: [...c.querySelectorAll('.text mark')].map(m => m.textContent)}))""")


def test_cards_are_documents_titled_with_passages_on_word_boundaries(page, live):
    stats = page.inner_text("#stats [data-stat=documents]")
    assert "24" in stats and "chunks" in stats  # "documents 24 (N chunks)"
    cards = _run(page, QUERY, "hybrid")
    hits = page.evaluate("() => EK.last.hits")
    assert len(cards) == 10 and len({c["id"] for c in cards}) == 10 and not any("#" in c["id"] for c in cards)
    summary = page.inner_text("#results-summary")
    assert summary.startswith("10 documents (") and "matching chunks)" in summary
    for c, h in zip(cards, hits):
        assert c["title"] == h["metadata"]["title"] and c["chip"] == h["id"]  # the title heads the card
        body = c["text"].removeprefix("… ").removesuffix(" …")
        flat = " ".join(h["text"].split())
        at = flat.find(body)
        assert at >= 0, (body[:40], flat[:80])
        assert at == 0 or flat[at - 1] == " ", f"{c['id']} passage starts mid-word: {body[:30]!r}"
        end = at + len(body)
        assert end == len(flat) or not flat[end].isalnum(), f"{c['id']} passage ends mid-word: {body[-30:]!r}"
        labels = [s.split()[0] for s in c["scores"]]
        assert labels == ["cosine", "BM25"], c["scores"]  # the parts, not a fused 0.03
    page.screenshot(path=str(SHOTS / "web-documents.png"), full_page=False)


def test_highlighting_skips_stopwords_and_single_letters(page):
    cards = _run(page, QUERY, "keyword")
    marks = {m.lower() for c in cards for m in c["marks"]}
    assert marks and marks <= {"smoking", "smoke", "smoker", "smokers", "lung", "lungs", "cancer", "cancers",
                               "risk", "risks", "effect", "effects"}, marks
    assert all(c["scores"][0].startswith("BM25 ") for c in cards)


def test_chunk_view_and_more_like_this(page):
    cards = _run(page, QUERY, "vector", chunks=True)
    assert cards and all("#" in c["id"] for c in cards)
    assert page.inner_text("#results-summary").startswith(f"{len(cards)} chunks")
    cards = _run(page, QUERY, "vector")
    first = cards[0]["id"]
    assert cards[0]["scores"][0].startswith("cosine ")
    with page.expect_response(lambda r: r.url.endswith("/similar")):
        page.click("#results .card >> nth=0 >> button.more")
    page.wait_for_function(f"() => document.querySelector('#results-summary').textContent.includes('like “{first}”')")
    like = page.evaluate("() => [...document.querySelectorAll('#results .card')].map(c => c.dataset.id)")
    assert like and first not in like and len(set(like)) == len(like) and not any("#" in i for i in like)
