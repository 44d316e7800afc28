"""2-D projections (tasks/projection.py) against scikit-learn's PCA, and `encoderkit map NAME -o map.png`
on a real collection built with the default model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from encoderkit.tasks.projection import (fit_pca, fit_projection, map_collection, resolve_method, sample_indices,
                                         umap_available)


def _data(n=200, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 3.0  # correlated, off-centre


def test_pca_matches_scikit_learn_up_to_sign_and_is_deterministic():
    from sklearn.decomposition import PCA

    X = _data()
    p = fit_pca(X)
    ref = PCA(n_components=2).fit(X)
    Y, R = p.transform(X), ref.transform(X)
    for a in range(2):
        sign = np.sign(Y[:, a] @ R[:, a])
        np.testing.assert_allclose(Y[:, a], sign * R[:, a], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(p.explained_variance, ref.explained_variance_ratio_, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(p.components, axis=1), 1.0, rtol=1e-9)
    # the sign rule: each axis' largest loading is positive, so the same data gives the same picture
    for c in p.components:
        assert c[np.argmax(np.abs(c))] > 0
    np.testing.assert_array_equal(fit_pca(X.copy()).transform(X), Y)
    # a new point lands where the axes say
    q = X[:1] + 0.5
    np.testing.assert_allclose(p.transform(q), (q - X.mean(0)) @ p.components.T, rtol=1e-5)


def test_pca_edge_cases_and_errors():
    one = fit_pca(np.ones((1, 4)))
    assert one.transform(np.ones((1, 4))).shape == (1, 2) and one.explained_variance == [0.0, 0.0]
    line = fit_pca(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]))
    assert line.explained_variance[0] == pytest.approx(1.0) and line.explained_variance[1] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="empty collection"):
        fit_pca(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="NaN"):
        fit_pca(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="fitted on 16"):
        fit_pca(_data()).transform(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="unknown projection method 'tsne'"):
        fit_projection(_data(), "tsne")
    assert resolve_method("auto", 200)[0] == ("umap" if umap_available() else "pca")  # what fit_projection fits
    assert resolve_method("auto", 3) == ("pca", "UMAP needs at least 4 documents (3 here), so this is a PCA map") \
        or not umap_available()


def test_umap_needs_its_package():
    if umap_available():
        p = fit_projection(_data(60), "umap")
        assert p.method == "umap" and p.transform(_data(60)[:3]).shape == (3, 2)
    else:
        with pytest.raises(RuntimeError, match="pip install umap-learn"):
            fit_projection(_data(), "umap")


def test_sample_indices():
    np.testing.assert_array_equal(sample_indices(5, 10), np.arange(5))
    s = sample_indices(1000, 50, seed=3)
    assert len(s) == 50 == len(set(s.tolist())) and np.all(np.diff(s) > 0) and s.max() < 1000
    np.testing.assert_array_equal(s, sample_indices(1000, 50, seed=3))
    with pytest.raises(ValueError, match="positive"):
        sample_indices(10, 0)


# ------------------------------------------------------------------ a real collection and the CLI
DOCS = [("hike", "Hikers on a mountain ridge at sunrise.", {"theme": "outdoor", "year": 2023}),
        ("surf", "A surfer crossing an empty beach at dawn.", {"theme": "outdoor", "year": 2022}),
        ("camp", "Friends around a campfire under the stars.", {"theme": "outdoor", "year": 2021}),
        ("office", "A business team reviewing charts in a meeting room.", {"theme": "corporate", "year": 2023}),
        ("laptop", "Hands typing on a laptop next to a coffee mug.", {"theme": "corporate", "year": 2020}),
        ("pasta", "A chef tossing fresh pasta in a restaurant kitchen.", {"theme": "food", "year": 2021}),
        ("salad", "A colourful salad bowl with avocado and lemon.", {"theme": "food", "year": 2023}),
        ("city", "A neon-lit city street at night in the rain.", {"theme": "urban"})]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import encoderkit
    from encoderkit.store import Collection

    root = tmp_path_factory.mktemp("collections")
    with Collection.open(root / "assets", encoder=encoderkit.load("all-MiniLM-L6-v2")) as c:
        c.add([t for _, t, _ in DOCS], ids=[i for i, _, _ in DOCS], metadatas=[m for *_, m in DOCS])
    return root


def test_map_collection_projects_every_document(store):
    from encoderkit.store import Collection

    with Collection.open(store / "assets", create=False) as c:
        m = map_collection(c, method="pca")
        ids, X = c.vectors()
        assert m.total == 8 and m.ids == ids and m.coords.shape == (8, 2)
        np.testing.assert_allclose(m.coords, fit_pca(X).transform(X), atol=1e-6)
        assert m.texts[m.ids.index("pasta")] == DOCS[5][1] and m.metadatas[m.ids.index("city")] == {"theme": "urban"}
        small = map_collection(c, limit=3, method="pca")
        assert len(small.ids) == 3 and small.total == 8 and set(small.ids) <= set(ids)


def test_cli_map_writes_the_png_with_query_and_colours(store, tmp_path, capsys):
    from PIL import Image

    from encoderkit.cli import main

    out = tmp_path / "plots" / "map.png"
    rc = main(["map", "assets", "--store", str(store), "-o", str(out), "--color", "theme", "--method", "pca",
               "--query", "people outdoors in nature", "-k", "3", "--labels", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["points"] == report["documents"] == 8 and report["method"] == "pca"
    assert report["legend"] == ["outdoor", "corporate", "food", "urban"]
    import encoderkit

    enc = encoderkit.load("all-MiniLM-L6-v2")  # oracle: the same ranking computed directly from the model
    X = enc.encode([t for _, t, _ in DOCS], normalize=True)
    q = enc.encode(["people outdoors in nature"], normalize=True)[0]
    assert report["query"]["hits"] == [DOCS[i][0] for i in np.argsort(-(X @ q))[:3]]
    assert report["query"]["hits"][0] == "hike"
    img = Image.open(out)
    assert img.format == "PNG" and img.size == (1500, 900)
    px = np.asarray(img.convert("RGB")).reshape(-1, 3)
    assert (np.abs(px.astype(int) - [0xE8, 0x26, 0x2D]).sum(1) < 40).sum() > 50  # the red query star is drawn
    # a numeric field gets a colour bar; the plain text line names the file
    assert main(["map", "assets", "--store", str(store), "-o", str(tmp_path / "y.png"), "--color", "year",
                 "--method", "pca"]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "y.png").stat().st_size > 10_000


def test_cli_map_errors_are_one_readable_line(store, tmp_path, capsys):
    from encoderkit.cli import main

    assert main(["map", "nope", "--store", str(store), "-o", str(tmp_path / "m.png")]) == 2
    assert "no collection at" in capsys.readouterr().err
    assert main(["map", "assets", "--store", str(store), "-o", str(tmp_path / "m.jpg")]) == 2
    assert "must end in .png" in capsys.readouterr().err
    assert main(["map", "assets", "--store", str(store), "-o", str(tmp_path / "m.png"), "--query", " "]) == 2
    assert "--query is empty" in capsys.readouterr().err
