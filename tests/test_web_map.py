"""The web page's map and image results (issue 17), in headless Chromium against a live server with the real
default model: the map is UMAP coloured by cluster with each cluster's keywords written on it and grey points
explained; the legend follows the field the user picks (a range bar for numbers, "no FIELD (n)" for the
documents without it); points are reachable by keyboard; an image collection's results are a grid of large
thumbnails with no server paths. Screenshots go to docs/screenshots/."""
from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import pytest

from conftest import data_path

CHROMIUM = os.environ.get("ENCODERKIT_CHROMIUM", "/usr/bin/chromium")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"browser tests need Chromium at {CHROMIUM} (run .ci/install-browser, or apt-get install chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need `pip install playwright`")
httpx = pytest.importorskip("httpx")

import encoderkit  # noqa: E402
from encoderkit.tasks.projection import umap_available  # noqa: E402
from test_web_api import asset_documents, make_collection, start_server  # noqa: E402

SHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MAP_MS = 600_000  # a server's first UMAP compiles umap-learn's numba kernels (41 s measured at a load of ~10 on 2 cores)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800),
              pytest.mark.skipif(not umap_available(), reason="the map tests need umap-learn (encoderkit[map])")]

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
           "purple": (140, 60, 170), "orange": (245, 140, 30)}


def picture(rgb: tuple[int, int, int], size: int = 128) -> str:
    """A JPEG data: URL of a filled disc of colour rgb on white, as image collections store thumbnails."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(img).ellipse((12, 12, size - 12, size - 12), fill=rgb)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def image_documents() -> list[dict]:
    """What `index add DIR --model CLIP` stores per image: the file name as text, server paths, a thumbnail."""
    return [{"id": f"shapes/{c}-disc.jpg", "text": f"{c}-disc.jpg",
             "metadata": {"path": f"/srv/photos/shapes/{c}-disc.jpg",
                          "thumbnail_path": f"/srv/collections/pics/thumbs/{c}.jpg",
                          "thumbnail": picture(rgb), "width": 640, "height": 480}} for c, rgb in COLOURS.items()]


def scifact_titles(n: int = 300) -> list[dict]:
    """The first n SciFact abstracts as title + first sentence (real topics for the clusters)."""
    docs = []
    with open(data_path("scifact", "corpus.jsonl"), encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            docs.append({"id": d["_id"], "text": f"{d['title']} {d['text'].split('. ')[0]}",
                         "metadata": {"title": d["title"]}})
            if len(docs) == n:
                break
    return docs


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    srv, keys = start_server(encoderkit.load("all-MiniLM-L6-v2"), tmp_path_factory, keys=False)
    with srv:
        r = httpx.post(srv.url + "/collections", json={"name": "scifact"}, timeout=60)
        assert r.status_code == 201, r.text
        r = httpx.post(srv.url + "/collections/scifact/documents", json={"documents": scifact_titles()}, timeout=1200)
        assert r.status_code == 200, r.text
        assets = asset_documents()
        del assets[-1]["metadata"]["year"]  # one document without the field the legend is asked about
        make_collection(srv.url, keys["admin"], "assets", assets)
        make_collection(srv.url, keys["admin"], "pics", image_documents())
        pics = srv.app.state.server.collections.get("pics")  # as `index add DIR --model CLIP` marks it
        from encoderkit.store.images import mark_image_collection

        mark_image_collection(pics, pics.model)
        yield srv


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path_factory.mktemp("chromium")), executable_path=CHROMIUM,
                                                   headless=True, args=ARGS, viewport={"width": 1280, "height": 1000})
        ctx.set_default_timeout(30_000)
        yield ctx
        ctx.close()


@pytest.fixture()
def open_map(context, live):
    """open_map(name): a new tab on collection `name` with the map drawn; JavaScript errors fail the test."""
    pages, errors = [], []

    def go(name: str):
        pg = context.new_page()
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto(f"{live.url}/?collection={name}")
        pg.wait_for_selector("#stats [data-stat=documents]")
        pg.click("#tab-map")
        pg.wait_for_selector("#map circle.pt", timeout=MAP_MS)
        pages.append(pg)
        return pg

    yield go
    for pg in pages:
        pg.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def map_json(live, name: str) -> dict:
    return httpx.get(f"{live.url}/collections/{name}/map", timeout=MAP_MS / 1000).json()


def test_the_map_is_umap_coloured_by_cluster_with_keyword_labels_and_grey_explained(open_map, live):
    pg = open_map("scifact")
    data = map_json(live, "scifact")  # the same cached map the page drew
    assert data["method"] == "umap" and data["note"] is None and len(data["clusters"]) >= 3
    assert pg.input_value("#color-by") == "__cluster"
    labels = pg.eval_on_selector_all("#map .cluster-label", "ts => ts.map(t => t.textContent)")
    assert labels == [c["label"] for c in data["clusters"]]
    assert all(len(c["keywords"]) >= 3 for c in data["clusters"])
    legend = pg.inner_text("#map-legend")
    assert "Clusters, by their top keywords" in legend
    for c in data["clusters"]:
        assert f"{c['label']} ({c['size']})" in legend
    noise = sum(p["cluster"] < 0 for p in data["points"])
    assert (f"no cluster ({noise}): not in any dense group" in legend) == (noise > 0)
    fills = pg.eval_on_selector_all("#map circle.pt", "cs => cs.map(c => [c.dataset.cluster, c.getAttribute('fill')])")
    by_cluster = {}
    for cluster, fill in fills:
        by_cluster.setdefault(cluster, set()).add(fill)
    assert all(len(f) == 1 for f in by_cluster.values())  # one colour per cluster
    assert len({next(iter(f)) for c, f in by_cluster.items() if c != "-1"}) == len(data["clusters"])
    assert "UMAP" in pg.inner_text("#map-summary")
    pg.screenshot(path=str(SHOTS / "web-map-clusters.png"), full_page=True)


def test_the_legend_follows_the_field_the_user_picks(open_map):
    pg = open_map("assets")
    options = pg.eval_on_selector_all("#color-by option", "os => os.map(o => o.value)")
    assert options[:2] == ["__cluster", ""] and "year" in options and "image" not in options
    pg.select_option("#color-by", "theme")
    legend = pg.inner_text("#map-legend")
    assert legend.startswith("theme") and "outdoor (4)" in legend and "corporate (3)" in legend
    pg.select_option("#color-by", "year")
    legend = pg.inner_text("#map-legend")
    assert "year:" in legend and "2020" in legend and "2023" in legend and "no year (1)" in legend
    assert pg.locator("#map-legend .ramp").count() == 1 and pg.locator("#map .cluster-label").count() == 0
    grey = pg.get_attribute("#map circle.pt[data-id='beach-umbrella']", "fill")
    assert grey == "#dcdcdc"  # the document without a year: the grey the legend names
    pg.screenshot(path=str(SHOTS / "web-map-field-legend.png"), full_page=True)


def test_map_points_are_reachable_by_keyboard(open_map):
    pg = open_map("assets")
    pg.focus("#color-by")
    pg.keyboard.press("Tab")
    assert pg.evaluate("document.activeElement.id") == "map"
    pg.keyboard.press("ArrowRight")
    first = pg.get_attribute("#map circle.pt.focused", "data-id")
    assert first and first in pg.inner_text("#tooltip") and first in pg.inner_text("#map-focus")
    x0 = float(pg.get_attribute("#map circle.pt.focused", "cx"))
    xs = pg.eval_on_selector_all("#map circle.pt", "cs => cs.map(c => Number(c.getAttribute('cx')))")
    step, further = ("ArrowRight", 1) if max(xs) > x0 else ("ArrowLeft", -1)  # the first may be the rightmost
    pg.keyboard.press(step)
    second = pg.get_attribute("#map circle.pt.focused", "data-id")
    assert second != first and further * (float(pg.get_attribute("#map circle.pt.focused", "cx")) - x0) > 0
    assert pg.get_attribute("#map", "aria-activedescendant") == pg.get_attribute("#map circle.pt.focused", "id")
    pg.keyboard.press("Enter")
    assert second in pg.inner_text("#map-detail")
    assert pg.evaluate("document.activeElement.textContent") == "More like this"


def test_image_results_are_a_grid_of_large_thumbnails_without_server_paths(context, live):
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(f"{live.url}/?collection=pics&q=green-disc.jpg&mode=vector")
    pg.wait_for_selector("#results li.tile")
    pg.wait_for_function("() => [...document.querySelectorAll('#results img.tile-img')].every(i => i.complete)")
    tiles = pg.locator("#results li.tile")
    assert tiles.count() == len(COLOURS) and pg.locator("#results .card").count() == 0
    assert "image-grid" in pg.get_attribute("#results", "class")
    sizes = pg.eval_on_selector_all("#results img.tile-img",
                                    "is => is.map(i => [i.naturalWidth, i.getBoundingClientRect().width])")
    assert all(natural == 128 and shown >= 150 for natural, shown in sizes)  # large, not 72-96 px chips
    assert tiles.first.locator(".tile-name").inner_text() == "green-disc.jpg"
    text = pg.inner_text("#results-view")
    assert "/srv/" not in text and "thumbnail_path" not in text and "640 × 480" in text
    pg.screenshot(path=str(SHOTS / "web-image-grid.png"), full_page=True)
    pg.set_viewport_size({"width": 390, "height": 844})
    widths = pg.eval_on_selector_all("#results img.tile-img", "is => is.map(i => i.getBoundingClientRect().width)")
    assert all(w >= 140 for w in widths)  # two columns on a phone
    tiles.nth(1).locator("button.more").click()
    pg.wait_for_function("() => document.querySelector('#results-summary').textContent.includes('documents like')")
    assert pg.locator("#results li.tile").count() >= 1
    pg.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
