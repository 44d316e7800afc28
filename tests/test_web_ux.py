"""The web page's state and feedback (issue 17), in headless Chromium against a live server: the URL holds
collection, query and mode (Back / Forward replay them, a shared link opens the same search), the query box has
focus on load and on "/", a running search dims the old results under a spinner, a failed search clears them, an
empty collection says how to fill it, empty results say why, and image collections offer only vector search.
Screenshots go to docs/screenshots/."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("ENCODERKIT_CHROMIUM", "/usr/bin/chromium")
httpx = pytest.importorskip("httpx")

import encoderkit  # noqa: E402
from test_web_api import asset_documents, make_collection, start_server  # noqa: E402

SHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    enc = encoderkit.load("all-MiniLM-L6-v2")
    srv, keys = start_server(enc, tmp_path_factory, keys=False)
    with srv:
        make_collection(srv.url, keys["admin"], "assets", asset_documents())
        r = httpx.post(srv.url + "/collections", json={"name": "empty"}, timeout=60)
        assert r.status_code == 201, r.text
        make_collection(srv.url, keys["admin"], "pics", asset_documents()[:4])
        pics = srv.app.state.server.collections.get("pics")  # as `index add DIR --model CLIP` marks it
        from encoderkit.store.images import mark_image_collection

        mark_image_collection(pics, pics.model)
        yield srv


# ------------------------------------------------------------------ the API side (no browser)
def test_search_answers_say_why_nothing_was_found(live):
    def ask(name, **body):
        r = httpx.post(live.url + f"/collections/{name}/search", json={"query": "mountain hike", **body}, timeout=60)
        return r.status_code, r.json()

    code, out = ask("empty")
    assert code == 200 and out["hits"] == [] and "`encoderkit index add empty FILE_OR_FOLDER`" in out["explanation"]
    code, out = ask("assets", where={"colour": "red"})
    assert out["hits"] == [] and "no document has the metadata field 'colour'" in out["explanation"]
    assert "kind" in out["explanation"] and "theme" in out["explanation"]  # the fields there are
    code, out = ask("assets", where={"kind": 3})
    assert "field 'kind'" in out["explanation"] and "holds strings" in out["explanation"]
    code, out = ask("assets", mode="keyword", query="zyzzyva")
    assert "keyword mode" in out["explanation"]
    code, out = ask("assets")
    assert out["hits"] and out.get("explanation") is None
    for mode in ("keyword", "hybrid"):
        code, out = ask("pics", mode=mode)
        assert code == 422 and "image collection" in json.dumps(out)
    stats = httpx.get(live.url + "/collections/pics/stats", timeout=60).json()
    assert stats["modality"] == "image" and "keyword" not in stats["modes"] and "hybrid" not in stats["modes"]


# ------------------------------------------------------------------ the page
if not os.path.exists(CHROMIUM):
    pytest.skip(f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need `pip install playwright`")


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    SHOTS.mkdir(parents=True, exist_ok=True)
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True, args=ARGS,
                                                   viewport={"width": 1280, "height": 900})
        ctx.set_default_timeout(TIMEOUT_MS)
        yield ctx
        ctx.close()


@pytest.fixture()
def open_page(context, live):
    """open_page(path) -> a new tab on that page of the live server, once its collection's stats are shown."""
    pages, errors = [], []

    def go(path: str = "/", wait: str = "#stats [data-stat=documents]"):
        pg = context.new_page()
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto(live.url + path)
        if wait:
            pg.wait_for_selector(wait)
        pg.wait_for_function("() => window.EK && EK.ready !== undefined")
        pg.evaluate("() => EK.ready")
        pages.append(pg)
        return pg
    yield go
    for pg in pages:
        pg.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def card_ids(pg) -> list[str]:
    return pg.eval_on_selector_all("#results .card", "cards => cards.map(c => c.dataset.id)")


def search(pg, query: str, mode: str = "vector") -> list[str]:
    pg.check(f"input[name=mode][value={mode}]")
    pg.fill("#query", query)
    with pg.expect_response(lambda r: r.url.endswith("/search")):
        pg.press("#query", "Enter")
    pg.wait_for_function("() => !document.querySelector('#results-view').classList.contains('busy')")
    return card_ids(pg)


def url_state(pg) -> dict:
    return pg.evaluate("() => Object.fromEntries(new URLSearchParams(location.search))")


def test_the_url_holds_collection_query_and_mode_and_back_forward_replay_them(open_page):
    pg = open_page("/?collection=assets&q=hiking%20in%20the%20mountains&mode=hybrid")
    pg.wait_for_selector("#results .card")
    assert card_ids(pg)[0] == "hike-sunrise"  # a shared link opens the same search
    assert pg.input_value("#query") == "hiking in the mountains"
    assert pg.is_checked("input[name=mode][value=hybrid]")
    first = card_ids(pg)
    second = search(pg, "chef cooking pasta", mode="vector")
    assert second[0] == "pasta-kitchen"
    assert url_state(pg) == {"collection": "assets", "q": "chef cooking pasta", "mode": "vector"}
    pg.select_option("#collection", "empty")
    pg.wait_for_selector(".empty-collection")
    assert url_state(pg) == {"collection": "empty"}
    pg.go_back()
    pg.wait_for_function("() => document.querySelector('#collection').value === 'assets'")
    pg.wait_for_function("() => document.querySelectorAll('#results .card').length > 0")
    assert card_ids(pg) == second and pg.input_value("#query") == "chef cooking pasta"
    pg.go_back()
    pg.wait_for_function("() => document.querySelector('#query').value === 'hiking in the mountains'")
    pg.wait_for_function("() => document.querySelector('#results .card')?.dataset.id === 'hike-sunrise'")
    assert card_ids(pg) == first and pg.is_checked("input[name=mode][value=hybrid]")
    pg.go_forward()
    pg.wait_for_function("() => document.querySelector('#results .card')?.dataset.id === 'pasta-kitchen'")
    assert pg.is_checked("input[name=mode][value=vector]")
    pg.screenshot(path=str(SHOTS / "web-url-state.png"))


def filter_rows(pg) -> list[list[str]]:
    return pg.eval_on_selector_all(".filter", "rows => rows.map(r => [r.querySelector('.filter-field').value, "
                                              "r.querySelector('.filter-op').value, r.querySelector('.filter-value').value])")


def test_the_url_holds_the_filters_too(open_page):
    """Metadata filters are part of a search's address: Back / Forward put the filter rows back as they were, and a
    shared link opens the same filtered search."""
    pg = open_page("/?collection=assets")
    assert pg.get_attribute("#query", "placeholder") == "Search “assets”"  # not an example from test data
    unfiltered = search(pg, "people outdoors")
    pg.click("#add-filter")
    pg.select_option(".filter-field >> nth=0", "theme")
    pg.fill(".filter-value >> nth=0", "outdoor")
    pg.click("#add-filter")
    pg.select_option(".filter-field >> nth=1", "year")
    pg.select_option(".filter-op >> nth=1", "$gte")
    pg.fill(".filter-value >> nth=1", "2022")
    filtered = search(pg, "people outdoors")
    assert filtered and set(filtered) <= {"hike-sunrise", "surf-dawn"} and filtered != unfiltered
    st = url_state(pg)
    assert json.loads(st["where"]) == {"$and": [{"theme": {"$eq": "outdoor"}}, {"year": {"$gte": 2022}}]}
    assert st["q"] == "people outdoors" and st["collection"] == "assets"
    shared = pg.url
    pg.go_back()
    pg.wait_for_function("() => document.querySelectorAll('.filter').length === 0")
    pg.wait_for_function(f"() => document.querySelectorAll('#results .card').length === {len(unfiltered)}")
    assert card_ids(pg) == unfiltered
    pg.go_forward()
    pg.wait_for_function("() => document.querySelectorAll('.filter').length === 2")
    pg.wait_for_function(f"() => document.querySelectorAll('#results .card').length === {len(filtered)}")
    assert card_ids(pg) == filtered
    assert filter_rows(pg) == [["theme", "$eq", "outdoor"], ["year", "$gte", "2022"]]
    other = open_page(shared.removeprefix(pg.url.split("/?")[0]), wait="#results .card")
    assert filter_rows(other) == [["theme", "$eq", "outdoor"], ["year", "$gte", "2022"]]
    other.wait_for_function(f"() => document.querySelectorAll('#results .card').length === {len(filtered)}")
    assert card_ids(other) == filtered and "filtered" in other.inner_text("#results-summary")
    assert other.evaluate("() => document.activeElement.id") == "query"  # restoring filters keeps the focus
    other.screenshot(path=str(SHOTS / "web-url-filters.png"))


def test_an_unknown_collection_in_the_url_is_said_and_another_shown(open_page):
    pg = open_page("/?collection=nope")
    assert "no collection “nope”" in pg.inner_text("#message")
    assert url_state(pg)["collection"] in ("assets", "empty", "pics")


def test_focus_on_load_and_the_slash_shortcut(open_page):
    pg = open_page("/")
    assert pg.evaluate("() => document.activeElement.id") == "query"
    pg.focus("#tab-map")
    pg.keyboard.press("/")
    assert pg.evaluate("() => document.activeElement.id") == "query"
    pg.keyboard.type("a/b")  # inside the box "/" is just a character
    assert pg.input_value("#query") == "a/b"


def test_a_running_search_dims_the_old_results_with_a_spinner(open_page):
    pg = open_page("/?collection=assets")
    search(pg, "hiking in the mountains")
    old = card_ids(pg)

    held = []  # the request waits here until the test lets it go: the page is caught mid-search
    pg.route("**/collections/assets/search", lambda route: held.append(route))
    pg.check("input[name=mode][value=vector]")
    pg.fill("#query", "chef cooking pasta")
    pg.press("#query", "Enter")
    pg.wait_for_selector("#results-view.busy")
    deadline = time.monotonic() + 10
    while not held and time.monotonic() < deadline:
        pg.wait_for_timeout(50)
    assert held
    assert pg.get_attribute("#results-view", "aria-busy") == "true"
    assert pg.is_visible("#results-summary .spinner") and "Searching" in pg.inner_text("#results-summary")
    assert card_ids(pg) == old  # still there, to read while waiting ...
    # ... but dimmed: a 0.15 s fade, so wait for it to end (a loaded machine was caught mid-fade at 0.68)
    pg.wait_for_function("() => parseFloat(getComputedStyle(document.querySelector('#results')).opacity) < 0.6",
                         timeout=5000)
    pg.screenshot(path=str(SHOTS / "web-searching.png"))
    held[0].continue_()
    pg.wait_for_function("() => !document.querySelector('#results-view').classList.contains('busy')")
    assert card_ids(pg)[0] == "pasta-kitchen" and not pg.is_visible("#results-summary .spinner")
    assert float(pg.eval_on_selector("#results", "e => getComputedStyle(e).opacity")) == 1
    pg.unroute("**/collections/assets/search")


def test_a_failed_search_clears_the_old_results(open_page):
    pg = open_page("/?collection=assets")
    assert search(pg, "hiking in the mountains")
    pg.route("**/collections/assets/search", lambda route: route.fulfill(
        status=500, content_type="application/json", body=json.dumps({"error": "disk on fire"})))
    pg.fill("#query", "chef cooking pasta")
    pg.press("#query", "Enter")
    pg.wait_for_selector("#message:not([hidden])")
    assert "disk on fire" in pg.inner_text("#message")
    assert card_ids(pg) == [] and "No results" in pg.inner_text("#results-summary")
    assert not pg.is_visible("#results-summary .spinner")
    pg.unroute("**/collections/assets/search")


def test_a_collection_that_cannot_be_opened_shows_no_stale_stats(open_page):
    pg = open_page("/?collection=assets")
    assert "15" in pg.inner_text("#stats")
    pg.route("**/collections/empty/stats", lambda route: route.abort())
    pg.select_option("#collection", "empty")
    pg.wait_for_selector("#message:not([hidden])")
    assert pg.inner_text("#stats").strip() == "" and card_ids(pg) == []
    assert "could not be opened" in pg.inner_text("#results-summary")


def test_a_slow_collection_open_shows_a_spinner_and_not_the_old_stats(open_page):
    """A cold open of a large collection takes seconds: the stats area says it is opening, with a spinner, and never
    shows the previous collection's numbers meanwhile."""
    pg = open_page("/?collection=assets")
    assert "15" in pg.inner_text("#stats")
    held = []
    pg.route("**/collections/empty/stats", lambda route: held.append(route))
    pg.select_option("#collection", "empty")
    pg.wait_for_selector("#stats .opening .spinner")
    deadline = time.monotonic() + 10
    while not held and time.monotonic() < deadline:
        pg.wait_for_timeout(50)
    assert held and "Opening “empty”" in pg.inner_text("#stats") and "15" not in pg.inner_text("#stats")
    held[0].continue_()
    pg.wait_for_selector("#stats [data-stat=documents]")
    assert not pg.is_visible("#stats .spinner") and pg.inner_text("#stats [data-stat=documents] dd") == "0"
    pg.unroute("**/collections/empty/stats")


def test_an_empty_collection_says_how_to_fill_it(open_page):
    pg = open_page("/?collection=empty", wait=".empty-collection")
    text = pg.inner_text(".empty-collection")
    assert "encoderkit index add empty FILE_OR_FOLDER" in text and "POST /collections/empty/documents" in text
    assert "has no documents yet" in pg.inner_text("#results-summary")
    pg.screenshot(path=str(SHOTS / "web-empty-collection.png"))
    pg.fill("#query", "anything")
    with pg.expect_response(lambda r: r.url.endswith("/search")):
        pg.press("#query", "Enter")
    pg.wait_for_selector("#results .empty")
    assert "the collection is empty" in pg.inner_text("#results .empty")


def test_no_results_are_explained(open_page):
    pg = open_page("/?collection=assets")
    assert search(pg, "zyzzyva", mode="keyword") == []
    assert "keyword mode matches whole words" in pg.inner_text("#results .empty")
    pg.click("#add-filter")
    pg.select_option(".filter-field", "kind")
    pg.fill(".filter-value", "hologram")
    assert search(pg, "outdoor adventure") == []
    assert "no document matches the filter" in pg.inner_text("#results .empty")
    pg.screenshot(path=str(SHOTS / "web-no-results-explained.png"))


def test_image_collections_offer_only_vector_search(open_page):
    pg = open_page("/?collection=assets")
    pg.check("input[name=mode][value=hybrid]")
    pg.select_option("#collection", "pics")
    pg.wait_for_function("() => document.querySelector('label[data-mode=keyword]').hidden")
    assert pg.is_hidden("label[data-mode=hybrid]") and pg.is_visible("label[data-mode=vector]")
    assert pg.is_checked("input[name=mode][value=vector]")
    pg.select_option("#collection", "assets")
    pg.wait_for_function("() => !document.querySelector('label[data-mode=keyword]').hidden")
    assert pg.is_visible("label[data-mode=hybrid]")
