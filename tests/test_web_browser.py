"""The web page end to end in headless Chromium (Debian `chromium`, driven by Playwright), against a live
loopback server with API keys, the real default model and a small asset collection. Screenshots of the search
and map views go to test-artifacts/web/. Costs ~40 s here (model load, one browser, ~12 page loads)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("ENCODERKIT_CHROMIUM", "/usr/bin/chromium")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"browser tests need Chromium at {CHROMIUM} (run .ci/install-browser, or apt-get install chromium "
                "chromium-driver)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need `pip install playwright`")
httpx = pytest.importorskip("httpx")

import encoderkit  # noqa: E402
from test_serve_clients import tiny_cross_encoder  # noqa: E402
from test_web_api import asset_documents, make_collection, start_server  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "web"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 20_000

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # ~55 s here in all: model load, one Chromium, 11 tests


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    enc = encoderkit.load("all-MiniLM-L6-v2")
    srv, keys = start_server(enc, tmp_path_factory, rerank_path=tiny_cross_encoder(tmp_path_factory.mktemp("ce")))
    with srv:
        make_collection(srv.url, keys["admin"], "assets", asset_documents())
        srv.keys = keys
        yield srv


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True, args=ARGS,
                                                   viewport={"width": 1280, "height": 900})
        ctx.set_default_timeout(TIMEOUT_MS)
        yield ctx
        ctx.close()


@pytest.fixture()
def page(context, live):
    """A new tab (its own sessionStorage) already holding the read key, on the page with `assets` open."""
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.add_init_script(f"sessionStorage.setItem('encoderkit.apiKey', {json.dumps(live.keys['read'])});")
    pg.goto(live.url + "/")
    pg.wait_for_selector("#stats [data-stat=documents]")
    yield pg
    pg.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def search(pg, query: str, mode: str = "vector") -> list[str]:
    """Type a query, press Enter, wait for the answer; the ids of the result cards."""
    pg.check(f"input[name=mode][value={mode}]")
    pg.fill("#query", query)
    with pg.expect_response(lambda r: r.url.endswith("/search")) as resp:
        pg.press("#query", "Enter")
    assert resp.value.status == 200
    pg.wait_for_function("() => !document.querySelector('#search-button').disabled")
    return pg.eval_on_selector_all("#results .card", "cards => cards.map(c => c.dataset.id)")


def message(pg) -> str:
    pg.wait_for_selector("#message:not([hidden])")
    return pg.inner_text("#message")


# ------------------------------------------------------------------ API keys
def test_wrong_api_key_shows_a_readable_error_and_the_right_one_is_kept_for_the_tab(context, live):
    pg = context.new_page()
    pg.goto(live.url + "/")
    assert "needs an API key" in message(pg)
    assert pg.is_visible("#key-form") and pg.evaluate("document.activeElement.id") == "api-key"
    pg.fill("#api-key", "ek-wrong-key")
    pg.press("#api-key", "Enter")
    pg.wait_for_function("() => document.querySelector('#message').textContent.includes('refused')")
    text = message(pg)
    assert "The API key was refused" in text and "invalid API key" in text and "{" not in text
    pg.fill("#api-key", live.keys["read"])
    pg.press("#api-key", "Enter")
    pg.wait_for_selector("#stats [data-stat=documents]")
    assert pg.is_hidden("#message") and pg.is_hidden("#key-form")
    assert pg.input_value("#collection") == "assets"
    pg.reload()  # kept for the tab: no prompt after a reload
    pg.wait_for_selector("#stats [data-stat=documents]")
    assert pg.is_hidden("#message")
    pg.close()


# ------------------------------------------------------------------ search
def test_query_shows_the_expected_top_result_with_stats(page):
    stats = page.inner_text("#stats")
    for expected in ("15", "all-MiniLM-L6-v2", "Flat", "384", "cosine"):
        assert expected in stats
    assert "never" not in page.inner_text("#stats [data-stat='last update']")
    ids = search(page, "hiking in the mountains")
    assert ids[0] == "hike-sunrise" and len(ids) == 10
    top = page.locator("#results .card").first
    assert top.locator(".score").count() == 1  # vector mode: one score, named by what it is
    assert top.locator(".score").inner_text().startswith("cosine 0.")
    assert "theme" in top.locator(".meta").inner_text() and "outdoor" in top.locator(".meta").inner_text()
    assert page.locator("#results mark").count() == 0  # vector mode: nothing to highlight
    page.screenshot(path=str(ARTIFACTS / "search.png"), full_page=True)


def test_hybrid_search_highlights_the_matched_terms(page):
    with page.expect_request(lambda r: r.url.endswith("/search")) as req:
        ids = search(page, "chef cooking pasta", mode="hybrid")
    assert json.loads(req.value.post_data)["mode"] == "hybrid"
    assert ids[0] == "pasta-kitchen"
    marks = page.locator("#results .card").first.locator("mark").all_inner_texts()
    assert {"Chef", "pasta"} <= set(marks)
    assert "hybrid" in page.inner_text("#results-summary")
    scores = page.locator("#results .card").first.locator(".score").all_inner_texts()
    assert [s.split()[0] for s in scores] == ["cosine", "BM25"]  # each list's score beside the fused rank (#1)
    page.screenshot(path=str(ARTIFACTS / "hybrid.png"))


def test_metadata_filter_limits_the_results(page):
    page.click("#add-filter")
    page.select_option(".filter-field", "kind")
    page.select_option(".filter-op", "$eq")
    page.fill(".filter-value", "video")
    with page.expect_request(lambda r: r.url.endswith("/search")) as req:
        ids = search(page, "outdoor adventure")
    assert json.loads(req.value.post_data)["where"] == {"kind": {"$eq": "video"}}
    videos = [d["id"] for d in asset_documents() if d["metadata"]["kind"] == "video"]
    assert sorted(ids) == sorted(videos) and ids[0] == "camp-stars"
    assert "filtered" in page.inner_text("#results-summary")
    page.click(".filter .remove")
    assert len(search(page, "outdoor adventure")) == 10


def test_rerank_and_more_like_this(page, live):
    page.check("#rerank")
    with page.expect_request(lambda r: r.url.endswith("/search")) as req:
        search(page, "hiking in the mountains")
    assert json.loads(req.value.post_data)["rerank"] is True
    assert page.locator("#results .card").first.locator(".score").first.inner_text().startswith("rerank ")
    page.uncheck("#rerank")
    search(page, "hiking in the mountains")
    with page.expect_response(lambda r: r.url.endswith("/similar")):
        page.click("#results .card[data-id='hike-sunrise'] button.more")
    page.wait_for_function("() => document.querySelector('#results-summary').textContent.includes('like')")
    ids = page.eval_on_selector_all("#results .card", "cards => cards.map(c => c.dataset.id)")
    ref = httpx.post(live.url + "/collections/assets/similar", json={"id": "hike-sunrise", "k": 10},
                     headers={"Authorization": f"Bearer {live.keys['read']}"}).json()["hits"]
    assert ids == [h["id"] for h in ref] and "hike-sunrise" not in ids


def test_image_collection_cards_show_the_thumbnail(page):
    ids = search(page, "watercolour beach umbrella")
    assert ids[0] == "beach-umbrella"
    img = page.locator("#results .card").first.locator("img.thumb")
    img.wait_for()
    page.wait_for_function("() => document.querySelector('#results .card img.thumb').complete")
    assert img.evaluate("i => i.naturalWidth") == 48
    assert "image" not in page.locator("#results .card").first.locator(".meta").inner_text()


# ------------------------------------------------------------------ map
def test_map_has_one_point_per_document_hover_and_query(page):
    search(page, "hiking in the mountains")
    page.click("#tab-map")
    page.wait_for_selector("#map circle.pt", timeout=600_000)  # a server's first UMAP compiles umap-learn's kernels
    assert page.locator("#map circle.pt").count() == 15 == int(page.inner_text("#stats [data-stat=documents] dd"))
    assert "15 points (all 15 documents)" in page.inner_text("#map-summary")
    page.wait_for_selector("#map .query-marker")
    hits = page.locator("#map circle.pt.hit")
    assert hits.count() == 10
    page.select_option("#color-by", "theme")
    legend = page.inner_text("#map-legend")
    assert "outdoor (4)" in legend and "corporate (3)" in legend
    assert len(set(page.eval_on_selector_all("#map circle.pt", "cs => cs.map(c => c.getAttribute('fill'))"))) == 5
    page.wait_for_selector("#map .query-marker")
    page.hover("#map circle.pt[data-id='dog-park']", force=True)
    page.wait_for_selector("#tooltip:not([hidden])")
    assert "dog-park" in page.inner_text("#tooltip") and "golden retriever" in page.inner_text("#tooltip")
    page.screenshot(path=str(ARTIFACTS / "map.png"), full_page=True)
    page.click("#map circle.pt[data-id='dog-park']", force=True)
    assert "golden retriever" in page.inner_text("#map-detail")
    assert page.evaluate("document.activeElement.textContent") == "More like this"


# ------------------------------------------------------------------ bad input
def test_empty_query_is_explained_and_sends_no_request(page):
    sent = []
    page.on("request", lambda r: sent.append(r.url) if "/search" in r.url else None)
    page.fill("#query", "   ")
    page.press("#query", "Enter")
    assert "search box is empty" in message(page)
    page.wait_for_timeout(300)
    assert sent == [] and page.evaluate("document.activeElement.id") == "query"


def test_collection_dropped_while_open_gives_a_readable_message(page, live):
    make_collection(live.url, live.keys["admin"], "temp", asset_documents()[:2])
    page.reload()
    page.wait_for_selector("#collection option[value=temp]", state="attached")
    page.select_option("#collection", "temp")
    page.wait_for_function("() => document.querySelector('#stats [data-stat=documents] dd')?.textContent === '2'")
    r = httpx.delete(live.url + "/collections/temp", headers={"Authorization": f"Bearer {live.keys['admin']}"})
    assert r.status_code == 200
    page.fill("#query", "hiking")
    page.press("#query", "Enter")
    page.wait_for_function("() => document.querySelector('#message').textContent.includes('no longer exists')")
    assert "“temp” no longer exists" in message(page)
    page.wait_for_function("() => !document.querySelector('#collection option[value=temp]')")
    assert page.input_value("#collection") == "assets"


def test_server_errors_and_a_lost_server_are_sentences_not_blank_pages(page):
    page.route("**/collections/assets/search", lambda route: route.fulfill(
        status=500, content_type="text/html", body="<html><body><h1>Internal Server Error</h1>Traceback...</body></html>"))
    page.fill("#query", "hiking")
    page.press("#query", "Enter")
    page.wait_for_function("() => document.querySelector('#message').textContent.includes('HTTP 500')")
    text = message(page)
    assert "The server failed while searching (HTTP 500" in text and "<" not in text and "Traceback" not in text
    assert page.is_visible("#search-form") and page.is_enabled("#search-button")
    page.screenshot(path=str(ARTIFACTS / "server-error.png"))
    page.unroute("**/collections/assets/search")
    page.route("**/collections/assets/search", lambda route: route.abort("connectionrefused"))
    page.press("#query", "Enter")
    page.wait_for_function("() => document.querySelector('#message').textContent.includes('Cannot reach')")
    assert "Is encoderkit serve still running?" in message(page)


# ------------------------------------------------------------------ keyboard and narrow windows
def test_keyboard_order_and_a_narrow_window(page):
    page.click("h1")  # the query box has focus on load: start the Tab walk from the top instead
    order = []
    for _ in range(6):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id || document.activeElement.name"))
    assert order[:4] == ["collection", "key-button", "query", "search-button"], order
    page.focus("#query")
    page.keyboard.type("city at night")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results .card")
    assert page.locator("#results .card").first.get_attribute("data-id") == "city-night"
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(100)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    widths = page.eval_on_selector_all("#results .card", "cs => cs.map(c => c.getBoundingClientRect().width)")
    assert min(widths) > 300  # one card per row, full width
    page.screenshot(path=str(ARTIFACTS / "narrow.png"), full_page=True)

