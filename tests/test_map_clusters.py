"""The map people would rather look at (issue 17): UMAP by default (PCA with a one-line note without
umap-learn), clusters found (HDBSCAN on a UMAP map, k-means for PCA) and named by c-TF-IDF keywords, a query
placed among its neighbours, the same in `encoderkit map` and the server's /map route."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from encoderkit.tasks import projection
from encoderkit.tasks.clusters import NOISE, ctfidf_keywords, describe_clusters, find_clusters
from encoderkit.tasks.projection import map_collection, place_by_neighbours, umap_available
from store_fakes import FakeEncoder

TOPICS = {"astronomy": "telescope galaxy orbit comet nebula planet star",
          "cooking": "oven recipe flour butter saucepan garlic simmer",
          "football": "goalkeeper striker penalty referee stadium league match"}


def topic_docs(per_topic: int = 20) -> tuple[list[str], list[str], list[dict]]:
    """Three topics of distinct vocabulary (each text 4 of its topic's words and 2 shared ones)."""
    rng = np.random.default_rng(0)
    ids, texts, metas = [], [], []
    for name, vocab in TOPICS.items():
        words = vocab.split()
        for i in range(per_topic):
            pick = rng.choice(words, size=4, replace=False).tolist()
            texts.append(" ".join(pick + ["today", "news"]))
            ids.append(f"{name}-{i}")
            metas.append({"topic": name, "n": i})
    return ids, texts, metas


def test_ctfidf_ranks_words_frequent_in_a_cluster_and_rare_elsewhere():
    texts = ["apple apple banana the", "apple cherry", "banana banana apple", "grape grape grape banana"]
    labels = np.array([0, 0, 1, 1])
    kw = ctfidf_keywords(texts, labels, top=3)
    # by hand: cluster 0 tf = {apple 3, banana 1, cherry 1}, cluster 1 tf = {banana 3, apple 1, grape 3};
    # A = (5 + 7) / 2 = 6 words per cluster; f = {apple 4, banana 4, cherry 1, grape 3}
    w = lambda tf, f: tf * math.log(1 + 6 / f)  # noqa: E731
    assert w(3, 4) > w(1, 1) > w(1, 4) and kw[0] == ["apple", "cherry", "banana"]  # "the" is a stopword
    assert w(3, 3) > w(3, 4) > w(1, 4) and kw[1] == ["grape", "banana", "apple"]
    # a word as frequent as another here but present in fewer clusters ranks first
    kw = ctfidf_keywords(["rare common", "common other", "other"], np.array([0, 1, 1]), top=2)
    assert kw[0] == ["rare", "common"]
    assert ctfidf_keywords(["a b"], np.array([NOISE])) == {}  # noise has no keywords
    kw = ctfidf_keywords(["stem cells cell cells", "other words"], np.array([0, 1]), top=2)
    assert kw[0] == ["cells", "stem"]  # "cell" is the same word as "cells" in a label


def test_hdbscan_finds_the_blobs_biggest_first_and_leaves_outliers_grey():
    rng = np.random.default_rng(1)
    blobs = [rng.normal(c, 0.3, size=(n, 2)) for c, n in (((0, 0), 30), ((10, 0), 60), ((0, 10), 45))]
    outliers = np.array([[30.0, 30.0], [-30.0, 25.0]])
    coords = np.vstack(blobs + [outliers])
    labels = find_clusters(coords, coords, "umap")
    assert labels[30:90].tolist() == [0] * 60 and labels[90:135].tolist() == [1] * 45  # sizes 60, 45, 30
    assert labels[:30].tolist() == [2] * 30 and labels[-2:].tolist() == [NOISE, NOISE]
    assert find_clusters(coords[:9], coords[:9], "umap").tolist() == [NOISE] * 9  # too few points for topics


def test_a_pca_map_gets_kmeans_clusters_on_the_vectors_with_keywords():
    ids, texts, _ = topic_docs()
    X = FakeEncoder().encode(texts)
    labels = find_clusters(np.zeros((len(X), 2)), X, "pca")  # the 2-D coordinates are not used
    assert NOISE not in labels.tolist() and labels.max() + 1 == 5  # k = sqrt(60 / 2) rounded
    topic_of = [i.split("-")[0] for i in ids]
    for c in describe_clusters(texts, labels):  # no cluster mixes topics; its keywords are its topic's words
        members = {topic_of[j] for j in np.flatnonzero(labels == c.id)}
        assert len(members) == 1 and set(c.keywords[:3]) <= set(TOPICS[members.pop()].split()), c


def test_a_new_vector_lands_among_its_nearest_points_and_a_stored_one_on_its_own():
    rng = np.random.default_rng(2)
    fitted = rng.normal(size=(40, 8))
    fitted /= np.linalg.norm(fitted, axis=1, keepdims=True)
    points = rng.uniform(0, 10, size=(40, 2)).astype(np.float32)
    np.testing.assert_allclose(place_by_neighbours(fitted[[5, 17]], fitted, points), points[[5, 17]])
    q = fitted[3] + 0.05 * rng.normal(size=8)
    near = np.argsort(-(fitted @ q / np.linalg.norm(q)))[:15]
    at = place_by_neighbours(q[None, :], fitted, points)[0]
    lo, hi = points[near].min(0), points[near].max(0)
    assert np.all(at >= lo) and np.all(at <= hi)  # a weighted mean of its 15 neighbours' places


@pytest.fixture
def topic_collection(tmp_path):
    from encoderkit.store import Collection

    ids, texts, metas = topic_docs()
    root = tmp_path / "collections"
    with Collection.open(root / "topics", encoder=FakeEncoder(name="fake")) as c:
        c.add(texts, ids=ids, metadatas=metas)
    return root


def test_without_umap_the_map_is_pca_and_says_so(topic_collection, monkeypatch, capsys):
    from encoderkit.cli import main
    from encoderkit.store import Collection

    monkeypatch.setattr(projection, "umap_available", lambda: False)
    with Collection.open(topic_collection / "topics", encoder=FakeEncoder(name="fake"), create=False) as c:
        m = map_collection(c)
    assert m.projection.method == "pca" and "pip install umap-learn" in m.note
    assert len(m.topics) >= 3 and sum(t.size for t in m.topics) == 60
    out = topic_collection / "pca.png"
    assert main(["map", "topics", "--store", str(topic_collection), "-o", str(out)]) == 0
    printed = capsys.readouterr()
    assert "note: UMAP is not installed (pip install umap-learn), so this is a PCA map" in printed.err
    assert "pca" in printed.out and "clusters" in printed.out and out.stat().st_size > 10_000
    assert main(["map", "topics", "--store", str(topic_collection), "-o", str(out), "--color", "colour"]) == 2
    assert "no document has the metadata field 'colour'; fields here: n, topic" in capsys.readouterr().err


@pytest.mark.slow  # umap-learn compiles its numba kernels in each new process: 55 s here at a load of ~10
@pytest.mark.skipif(not umap_available(), reason="needs umap-learn (pip install 'encoderkit[map]')")
def test_the_default_map_is_umap_with_one_labelled_cluster_per_topic(topic_collection, capsys):
    from encoderkit.cli import main

    out = topic_collection / "map.png"
    assert main(["map", "topics", "--store", str(topic_collection), "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "umap" and report["note"] is None and report["points"] == 60
    clusters = report["clusters"]
    assert len(clusters) == 3 and [c["size"] for c in clusters] == [20, 20, 20]
    for c in clusters:  # each cluster is named by its own topic's words
        topic = next(t for t, vocab in TOPICS.items() if c["keywords"][0] in vocab.split())
        assert all(k in TOPICS[topic].split() for k in c["keywords"][:3]), c
        assert c["label"] == " · ".join(c["keywords"][:3]) and c["label"] in report["legend"]
    from PIL import Image

    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (1500, 900)


def test_the_map_route_sends_clusters_and_the_pca_note(topic_collection, monkeypatch):
    httpx = pytest.importorskip("httpx")
    from encoderkit.serve.app import create_app
    from encoderkit.serve.models import ModelRegistry
    from encoderkit.serve.state import ServeConfig
    from encoderkit.serve.testing import LiveServer
    from encoderkit.serve.web import mount_web

    monkeypatch.setattr(projection, "umap_available", lambda: False)
    app = create_app(ServeConfig(store=str(topic_collection)), registry=ModelRegistry())
    mount_web(app)
    with LiveServer(app) as srv:
        m = httpx.get(srv.url + "/collections/topics/map", timeout=120).json()
        assert m["method"] == "pca" and m["note"].startswith("UMAP is not installed")
        assert [c["size"] for c in m["clusters"]] == sorted((c["size"] for c in m["clusters"]), reverse=True)
        assert sum(c["size"] for c in m["clusters"]) == 60 and all(p["cluster"] >= 0 for p in m["points"])
        assert {p["cluster"] for p in m["points"]} == {c["id"] for c in m["clusters"]}
        c0 = m["clusters"][0]
        assert c0["label"] == " · ".join(c0["keywords"][:3])
        r = httpx.get(srv.url + "/collections/topics/map", params={"method": "umap"}, timeout=60)
        assert r.status_code == 422 and "pip install umap-learn" in r.json()["error"]


def test_a_map_of_many_dense_regions_is_not_cut_in_two():
    """Two far-apart groups of four dense blobs each (320 points): HDBSCAN's excess-of-mass selection keeps only
    the root split (2 clusters) here, as it did on a real 300-abstract SciFact map after a last-bit change in the
    vectors; find_clusters then takes the hierarchy's leaf clusters, the blobs."""
    import warnings

    from sklearn.cluster import HDBSCAN

    from encoderkit.tasks.clusters import find_clusters, min_cluster_size

    rng = np.random.default_rng(0)
    centers = [(g * 100 + dx * 1.2, dy * 1.2) for g in (0, 1) for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1))]
    coords = np.concatenate([rng.normal(c, 0.3, (40, 2)) for c in centers])
    size = min_cluster_size(len(coords))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        eom = HDBSCAN(min_cluster_size=size, min_samples=min(size, 10), copy=True).fit_predict(coords)
    assert eom.max() + 1 == 2  # the case this guards against
    labels = find_clusters(coords, coords, "umap")
    assert labels.max() + 1 >= 8
    blob = np.repeat(np.arange(8), 40)
    for c in range(labels.max() + 1):  # every cluster lies (almost) inside one blob: the leaves do not merge them
        assert np.bincount(blob[labels == c]).max() >= 0.8 * (labels == c).sum(), c
    assert set(blob[labels >= 0]) == set(range(8))  # and every blob has a cluster
