"""`encoderkit index create --kinds`, `search --mode sparse|late --modes --weights` and `index add --late-chunking`
end to end on tiny random checkpoints: a SPLADE SparseEncoder folder, a MultiVectorEncoder folder and a plain
sentence-transformers BERT (its own token vectors, `--kinds dense,late`). Results are checked against the models'
own outputs scored in numpy; each bad option is one line and exit code 2."""
from __future__ import annotations

import json

import numpy as np
import pytest

import encoderkit
from encoderkit.cli import main
from encoderkit.tasks.maxsim import maxsim
from tiny_checkpoints import sentences, tiny_family_folder

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
st = pytest.importorskip("sentence_transformers")

TEXTS = sentences(40, 120, seed=11, min_len=3, max_len=14)
IDS = [f"d{i}" for i in range(len(TEXTS))]
QUERIES = [TEXTS[3].split()[0] + " " + TEXTS[17].split()[-1], TEXTS[8]]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def docs(tmp_path):
    f = tmp_path / "docs.jsonl"
    f.write_text("\n".join(json.dumps({"id": i, "text": t}) for i, t in zip(IDS, TEXTS)) + "\n", encoding="utf-8")
    return f


@pytest.fixture(scope="module")
def splade_dir(tmp_path_factory):
    from test_sparse_encoder import _mlm, _splade_folder

    base = tmp_path_factory.mktemp("splade")
    return _splade_folder(_mlm(base / "mlm"), base / "st")


@pytest.fixture(scope="module")
def colbert_dir(tmp_path_factory):
    from test_multivector_encoder import _mve_folder

    return _mve_folder(tmp_path_factory.mktemp("mve"), expansion={"strategy": "fixed", "attend": False, "length": 12})


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
    return tiny_family_folder("bert", tmp_path_factory.mktemp("dense"))


def _ids(out: str) -> list[str]:
    return [h["id"] for h in json.loads(out)]


def _top(scores: np.ndarray, k: int) -> list[str]:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return [IDS[i] for i in order[:k]]


def test_search_mode_sparse_ranks_by_the_models_sparse_dot_products(tmp_path, docs, splade_dir, capsys):
    store = tmp_path / "cols"
    code, out, err = run(capsys, "index", "create", "sp", "--model", splade_dir, "--store", store, "--json")
    assert code == 0, err
    assert json.loads(out)["kinds"] == ["sparse"]
    assert run(capsys, "index", "add", "sp", docs, "--store", store)[0] == 0
    enc = encoderkit.load(splade_dir)
    D = enc.encode_document(TEXTS, output="sparse")
    for q in QUERIES:
        s = (D @ enc.encode_query([q], output="sparse").T).toarray()[:, 0]
        code, out, err = run(capsys, "search", "sp", q, "--mode", "sparse", "-k", "5", "--store", store, "--json")
        assert code == 0, err
        hits = json.loads(out)
        assert [h["id"] for h in hits] == _top(s, 5)
        assert np.allclose([h["score"] for h in hits], sorted(s, reverse=True)[:5], atol=1e-4)
    code, _, err = run(capsys, "search", "sp", "w1", "--mode", "vector", "--store", store)
    assert code == 2 and "cannot search by vector" in err and "keyword, sparse, hybrid" in err
    assert len(err.strip().splitlines()) == 1


def test_search_mode_late_ranks_by_maxsim_of_a_colbert_folder(tmp_path, docs, colbert_dir, capsys):
    store = tmp_path / "cols"
    code, out, err = run(capsys, "index", "create", "cb", "--model", colbert_dir, "--store", store,
                         "--late-index", "HNSW16", "--json")
    assert code == 0 and json.loads(out)["kinds"] == ["late"], err
    assert run(capsys, "index", "add", "cb", docs, "--store", store)[0] == 0
    enc = encoderkit.load(colbert_dir)
    D = enc.encode_document(TEXTS, output="multivector")
    for q in QUERIES:
        Q = enc.encode_query([q], output="multivector")[0]
        s = np.array([maxsim(Q, d) for d in D])
        code, out, err = run(capsys, "search", "cb", q, "--mode", "late", "-k", "4", "--store", store, "--json")
        assert code == 0, err
        assert _ids(out) == _top(s, 4)


def test_plain_model_late_kind_is_searchable_from_a_fresh_load(tmp_path, docs, dense_dir, capsys):
    """--kinds dense,late on a plain model stores its normalized token vectors; add and search load the model
    afresh by name (no token_late set on it) and still give and score those token vectors."""
    store = tmp_path / "cols"
    code, out, err = run(capsys, "index", "create", "pl", "--model", dense_dir, "--kinds", "dense,late",
                         "--store", store, "--json")
    assert code == 0 and json.loads(out)["kinds"] == ["dense", "late"], err
    code, _, err = run(capsys, "index", "add", "pl", docs, "--store", store)
    assert code == 0, err
    enc = encoderkit.load(dense_dir)
    enc.token_late = True
    D = enc.encode_document(TEXTS, output="multivector")
    Q = enc.encode_query([QUERIES[0]], output="multivector")[0]
    s = np.array([maxsim(Q, d) for d in D])
    code, out, err = run(capsys, "search", "pl", QUERIES[0], "--mode", "late", "-k", "5", "--store", store, "--json")
    assert code == 0, err
    assert _ids(out) == _top(s, 5)


def test_hybrid_modes_and_weights_reach_the_fusion(tmp_path, docs, dense_dir, capsys):
    from encoderkit.store import Collection

    store = tmp_path / "cols"
    run(capsys, "index", "create", "hy", "--model", dense_dir, "--kinds", "dense,late", "--store", store)
    run(capsys, "index", "add", "hy", docs, "--store", store)
    q = QUERIES[0]
    code, out, err = run(capsys, "search", "hy", q, "--modes", "vector,late", "--weights", "0.2,0.8", "--fusion",
                         "weighted", "-k", "6", "--store", store, "--json")
    assert code == 0, err
    hits = json.loads(out)
    assert all(set(h["scores"]) == {"vector", "late", "fused"} for h in hits)
    with Collection.open(store / "hy") as col:
        ref = col.search(q, k=6, mode="hybrid", modes=["vector", "late"], weights=[0.2, 0.8], fusion="weighted")
        other = col.search(q, k=6, mode="hybrid", modes=["vector", "late"], weights=[0.8, 0.2], fusion="weighted")
    assert [h["id"] for h in hits] == [h.id for h in ref]
    assert np.allclose([h["score"] for h in hits], [h.score for h in ref])
    assert not np.allclose([h["score"] for h in hits], [h.score for h in other])  # the weights changed the scores
    code, out, _ = run(capsys, "search", "hy", q, "--weights", "late=1", "-k", "3", "--store", store, "--json")
    assert code == 0 and all(set(h["scores"]) == {"late", "fused"} for h in json.loads(out))


@pytest.mark.parametrize("argv, message", [
    (["--modes", "vector,bogus"], "'bogus' is not one"),
    (["--weights", "0.7,0.3"], "needs --modes"),
    (["--modes", "vector,keyword", "--weights", "1"], "1 numbers for 2 --modes"),
    (["--weights", "vector=x"], "'x' is not a number"),
    (["--weights", "vector=-1"], "finite and >= 0"),
    (["--weights", "vector=1,0.5"], "not a mix"),
    (["--mode", "late", "--modes", "vector"], "do not go with --mode late"),
    (["--mode", "sparse"], "cannot search by sparse: it holds dense vectors"),
    (["--modes", "vector,late"], "cannot search by late"),
])
def test_search_option_errors_are_one_line(tmp_path, docs, dense_dir, capsys, argv, message):
    store = tmp_path / "cols"
    run(capsys, "index", "create", "d", "--model", dense_dir, "--store", store)
    code, _, err = run(capsys, "search", "d", "w1", "--store", store, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_create_and_add_option_errors(tmp_path, docs, dense_dir, splade_dir, capsys):
    store = tmp_path / "cols"
    code, _, err = run(capsys, "index", "create", "x", "--model", dense_dir, "--kinds", "dense,colbert",
                       "--store", store)
    assert code == 2 and "'colbert' is not one" in err and not (store / "x").exists()
    run(capsys, "index", "create", "sp", "--model", splade_dir, "--store", store)
    code, _, err = run(capsys, "index", "add", "sp", docs, "--late-chunking", "--store", store)
    assert code == 2 and "holds sparse vectors only" in err
    code, _, err = run(capsys, "index", "add", "sp", docs, "--late-chunking", "--chunk-tokens", "0", "--store", store)
    assert code == 2 and "--chunk-tokens 0" in err


# ---------------------------------------------------------------------- late chunking
def test_passes_group_chunks_and_widen_to_the_window():
    from encoderkit.late_chunking import _passes

    bounds = [(i, i + 9) for i in range(0, 100, 10)]  # ten chunks of 10 tokens
    got = _passes(bounds, 100, 30)
    assert [g for _, _, g in got] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert got[0][:2] == (0, 29) and got[1][:2] == (30, 59)  # full windows, each chunk inside its pass
    assert got[3][:2] == (70, 99)  # the last chunk: context from before it, the window full
    assert [w[:2] for w in _passes([(40, 49)], 100, 30)] == [(30, 59)]  # centred: 10 tokens each side
    with pytest.raises(ValueError, match="more than the 30"):
        _passes([(0, 40)], 100, 30)


def test_encode_long_reads_context_within_its_pass_only(dense_dir):
    from encoderkit.late_chunking import encode_long

    enc = encoderkit.load(dense_dir)  # a 48-token window
    words = [f"w{(7 * i) % 100}" for i in range(150)]
    text = " ".join(words)
    starts = [len(" ".join(words[:i])) + (i > 0) for i in range(len(words) + 1)]
    spans = [(starts[i], starts[i + 10] - 1) for i in range(0, 150, 10)]  # 15 chunks of 10 words
    V = encode_long(enc, text, spans)
    assert V.shape == (15, enc.dim) and np.allclose(np.linalg.norm(V, axis=1), 1, atol=1e-5)
    alone = enc.encode([text[a:b] for a, b in spans])
    assert (np.abs(V - alone).max(axis=1) > 1e-3).all()  # every chunk saw text beyond itself

    def edited(i: int) -> np.ndarray:
        w = list(words)
        w[i] = "w99" if w[i] != "w99" else "w98"
        t = " ".join(w)
        return encode_long(enc, t, spans)
    near = edited(69)  # the word just before chunk 7 (words 70-79): inside chunk 7's pass
    assert np.abs(near[7] - V[7]).max() > 1e-4
    far = edited(5)  # 65+ words away: outside chunk 7's 44-token pass
    assert np.abs(far[7] - V[7]).max() < 1e-6 and np.abs(far[0] - V[0]).max() > 1e-4
    short = "w1 w2 w3 w4 w5 w6"  # a text inside one window: exactly encode(text, chunks=spans)
    assert np.abs(encode_long(enc, short, [(0, 5), (6, 17)]) - enc.encode(short, chunks=[(0, 5), (6, 17)])).max() < 1e-6


def test_index_add_late_chunking_stores_chunk_vectors_from_the_whole_document(tmp_path, dense_dir, capsys):
    from encoderkit.late_chunking import encode_long
    from encoderkit.store import Collection
    from encoderkit.store.ingest import _untruncated, chunk_spans

    words = [f"w{(11 * i) % 100}" for i in range(95)]  # no word sequence repeats: no duplicate chunk
    (tmp_path / "long.txt").write_text(" ".join(words), encoding="utf-8")
    (tmp_path / "short.txt").write_text("w5 w6 w7", encoding="utf-8")
    store = tmp_path / "cols"
    for name, extra in (("late", ["--late-chunking"]), ("naive", [])):
        code, out, err = run(capsys, "index", "add", name, tmp_path / "long.txt", tmp_path / "short.txt", "--model",
                             dense_dir, "--chunk-tokens", "12", "--overlap", "2", "--store", store, "--json", *extra)
        assert code == 0 and json.loads(out)["chunked"] == 1, err
    enc = encoderkit.load(dense_dir)
    text = " ".join(words)
    spans = chunk_spans(text, _untruncated(enc.tokenizer), 12, 2)
    want = encode_long(enc, text, spans)
    with Collection.open(store / "late") as late, Collection.open(store / "naive") as naive:
        ids, X = late.vectors()
        got = dict(zip(ids, X))
        nids, NX = naive.vectors()
        plain = dict(zip(nids, NX))
    assert sorted(ids) == sorted(nids) and len(ids) == len(spans) + 1
    for i in range(len(spans)):
        assert np.abs(got[f"long.txt#{i}"] - want[i]).max() < 1e-5
        assert np.abs(got[f"long.txt#{i}"] - plain[f"long.txt#{i}"]).max() > 1e-3
    assert np.abs(got["short.txt"] - plain["short.txt"]).max() < 1e-6  # one chunk: the same as plain encoding


def test_context_tokens_widen_the_late_chunking_passes(tmp_path, dense_dir, capsys):
    from encoderkit.late_chunking import encode_long
    from encoderkit.store import Collection
    from encoderkit.store.ingest import _untruncated, chunk_spans

    words = [f"w{(13 * i) % 100}" for i in range(90)]
    (tmp_path / "long.txt").write_text(" ".join(words), encoding="utf-8")
    store = tmp_path / "cols"
    base = ["index", "add", "c", tmp_path / "long.txt", "--model", dense_dir, "--chunk-tokens", "12", "--store", store]
    code, _, err = run(capsys, *base, "--context-tokens", "64")
    assert code == 2 and "add --late-chunking" in err
    code, _, err = run(capsys, *base, "--late-chunking", "--context-tokens", "100")
    assert code == 2 and "reads at most 64 tokens" in err  # the tiny BERT has 64 positions
    assert not (store / "c").exists()  # refused before the collection was made
    code, _, err = run(capsys, *base[:-4], "--chunk-tokens", "46", "--store", store, "--late-chunking")
    assert code == 2 and "do not fit one 48-token pass" in err
    code, _, err = run(capsys, *base, "--late-chunking", "--context-tokens", "64")
    assert code == 0, err
    text = " ".join(words)
    wide, narrow = encoderkit.load(dense_dir, max_length=64), encoderkit.load(dense_dir)
    spans = chunk_spans(text, _untruncated(narrow.tokenizer), 12, 11)  # ingest caps --overlap 32 at size - 1
    with Collection.open(store / "c") as col:
        ids, X = col.vectors()
    got = dict(zip(ids, X))
    want, before = encode_long(wide, text, spans), encode_long(narrow, text, spans)
    assert len(ids) == len(spans)
    assert max(np.abs(got[f"long.txt#{i}"] - want[i]).max() for i in range(len(spans))) < 1e-5
    assert max(np.abs(want[i] - before[i]).max() for i in range(len(spans))) > 1e-3  # the window mattered


def test_server_searches_and_adds_to_a_plain_model_late_collection(tmp_path, docs, dense_dir, capsys):
    """A collection made by the CLI with --kinds dense,late on a plain model: the server loads that model by name
    on first use (no token_late on it) and still encodes token vectors for search and for new documents."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from encoderkit.serve.app import create_app
    from encoderkit.serve.metrics import Metrics
    from encoderkit.serve.models import ModelRegistry
    from encoderkit.serve.state import ServeConfig
    from encoderkit.serve.testing import LiveServer

    store = tmp_path / "cols"
    run(capsys, "index", "create", "pl", "--model", dense_dir, "--kinds", "dense,late", "--store", store)
    run(capsys, "index", "add", "pl", docs, "--store", store)
    code, out, _ = run(capsys, "search", "pl", QUERIES[1], "--mode", "late", "-k", "5", "--store", store, "--json")
    cli = json.loads(out)
    cfg = ServeConfig(max_inputs=64, store=str(store), models=[])
    with LiveServer(create_app(cfg, registry=ModelRegistry(), metrics=Metrics())) as srv:
        http = httpx.Client(timeout=120)
        r = http.post(srv.url + "/collections/pl/search", json={"query": QUERIES[1], "mode": "late", "k": 5})
        assert r.status_code == 200, r.text
        assert [h["id"] for h in r.json()["hits"]] == [h["id"] for h in cli]
        assert np.allclose([h["score"] for h in r.json()["hits"]], [h["score"] for h in cli], atol=1e-4)
        r = http.post(srv.url + "/collections/pl/documents", json={"documents": [{"id": "new", "text": TEXTS[8]}]})
        assert r.status_code == 200, r.text
        r = http.post(srv.url + "/collections/pl/search", json={"query": TEXTS[8], "mode": "late", "k": 2})
        assert {h["id"] for h in r.json()["hits"]} == {"new", "d8"}
