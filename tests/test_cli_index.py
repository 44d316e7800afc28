"""`encoderkit index|search|dedup|eval` end to end, in-process, with the fake encoder standing in for a model."""
from __future__ import annotations

import json

import pytest

import encoderkit
from encoderkit.cli import main
from store_fakes import FakeEncoder


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ENCODERKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(encoderkit, "load", lambda name, **kw: FakeEncoder(name="fake"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "papers.jsonl").write_text("\n".join(json.dumps(o) for o in [
        {"id": "p1", "text": "sunshine and beaches make summer warm", "year": 2021},
        {"id": "p2", "text": "winter snow storms in the mountains", "year": 2018},
        {"id": "p3", "text": "summer holidays at the sunny beach", "year": 2023},
        {"id": "p4", "text": "summer holidays at the sunny beach", "year": 2023},
    ]) + "\n", encoding="utf-8")
    (docs / "notes.txt").write_text("python code review notes", encoding="utf-8")
    (docs / "bad.txt").write_bytes(b"\xff\xfe not utf8 \xc3")
    return tmp_path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_index_lifecycle(home, capsys):
    code, out, _ = run(capsys, "index", "create", "papers", "--model", "fake", "--json")
    assert code == 0 and json.loads(out)["model"] == "fake-32"
    assert (home / "home" / "collections" / "papers" / "collection.db").exists()
    code, _, err = run(capsys, "index", "create", "papers", "--model", "fake")
    assert code == 2 and "already exists" in err

    code, out, _ = run(capsys, "index", "add", "papers", str(home / "docs"), "--json")
    rep = json.loads(out)
    assert code == 0 and rep["added"] == 4 and rep["duplicates"] == 1 and rep["documents"] == 4
    assert rep["errors"] == [{"path": str(home / "docs" / "bad.txt"), "error": "not UTF-8 text"}]

    code, out, _ = run(capsys, "search", "papers", "summer beach", "-k", "2", "--mode", "hybrid",
                       "--where", '{"year": {"$gte": 2020}}', "--json")
    hits = json.loads(out)
    assert code == 0 and len(hits) == 2 and all(h["metadata"]["year"] >= 2020 for h in hits)
    code, out, _ = run(capsys, "search", "papers", "summer beach", "-k", "3")
    lines = out.splitlines()
    assert lines[0].startswith("3 documents for 'summer beach' (hybrid: ranked by RRF (k=60) of cosine + BM25)")
    assert lines[1].split()[:4] == ["#", "COSINE", "BM25", "ID"] and len(lines) == 5
    code, _, err = run(capsys, "search", "papers", "x", "-k", "0")
    assert code == 2 and "k must be a positive integer" in err
    code, _, err = run(capsys, "search", "papers", "x", "--where", '{"year": {"$regex": "2"}}')
    assert code == 2 and "$regex" in err

    code, out, _ = run(capsys, "index", "info", "papers", "--check", "--json")
    info = json.loads(out)
    assert code == 0 and info["documents"] == 4 and info["check"]["ok"]
    code, out, _ = run(capsys, "index", "list", "--json")
    assert [r["name"] for r in json.loads(out)] == ["papers"]

    code, out, _ = run(capsys, "dedup", "papers", "--threshold", "0.9", "--json")
    assert code == 0 and json.loads(out)["groups"] == []  # the exact copy p4 was skipped at ingest

    code, out, _ = run(capsys, "index", "delete", "papers", "--ids", "p1", "--json")
    assert json.loads(out) == {"deleted_documents": 1, "documents": 3}
    code, out, _ = run(capsys, "index", "delete", "papers", "--json")
    assert code == 0 and not (home / "home" / "collections" / "papers").exists()
    code, _, err = run(capsys, "index", "info", "papers")
    assert code == 2 and "no collection 'papers'" in err


def test_store_flag_and_model_mismatch(home, capsys, monkeypatch):
    store = home / "elsewhere"
    assert run(capsys, "index", "create", "c1", "--model", "fake", "--store", str(store))[0] == 0
    assert (store / "c1" / "collection.db").exists()
    monkeypatch.setattr(encoderkit, "load", lambda name, **kw: FakeEncoder(dim=16, name="other"))
    from encoderkit.store import Collection

    with pytest.raises(ValueError, match=r"fake-32.*other-16"):
        Collection.open(store / "c1", "other")


def test_eval_beir_cli_keyword(home, capsys, tmp_path):
    b = tmp_path / "beir"
    (b / "qrels").mkdir(parents=True)
    (b / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": f"d{i}", "title": t, "text": x}) for i, (t, x) in enumerate([
        ("Sun", "sunshine on the beach"), ("Snow", "winter snow storms"), ("Code", "python programs")])), encoding="utf-8")
    (b / "queries.jsonl").write_text("\n".join(json.dumps({"_id": q, "text": t}) for q, t in [
        ("q1", "beach sunshine"), ("q2", "python"), ("q3", "unjudged")]), encoding="utf-8")
    (b / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\nq2\td2\t1\n", encoding="utf-8")
    for mode in ("keyword", "vector", "hybrid"):
        code, out, _ = run(capsys, "eval", "beir", str(b), "--model", "fake", "--mode", mode, "--json")
        res = json.loads(out)
        assert code == 0 and res["queries"] == 2 and res["mode"] == mode
        assert set(res) >= {"ndcg@10", "recall@100", "mrr@10", "map@100"}
        if mode == "keyword":
            assert res["ndcg@10"] == 1.0 and res["mrr@10"] == 1.0
    # several modes at once: one encoding, the same figures as one mode at a time, and a bar chart
    code, out, _ = run(capsys, "eval", "beir", str(b), "--model", "fake", "--mode", "all", "--json",
                       "--plot", str(tmp_path / "chart.png"))
    assert code == 0
    multi = json.loads(out)
    assert [r["mode"] for r in multi["modes"]] == ["vector", "keyword", "hybrid"]
    for r in multi["modes"]:
        code, out, _ = run(capsys, "eval", "beir", str(b), "--model", "fake", "--mode", r["mode"], "--json")
        single = json.loads(out)
        assert all(single[m] == r[m] for m in ("ndcg@10", "recall@100", "mrr@10", "map@100"))
    from PIL import Image

    with Image.open(tmp_path / "chart.png") as im:
        assert im.size[0] > 300 and im.size[1] > 200
    with pytest.raises(SystemExit):
        main(["eval", "beir", str(b), "--mode", "vector,semantic"])


def test_search_rerank_weight(home, capsys, monkeypatch):
    """`search --rerank CE --rerank-weight w`: w = 0 keeps the first-stage order (the scores fused, not replaced),
    w = 1 the cross-encoder's; a weight outside [0, 1] is a one-line error."""
    from encoderkit.tasks import rerank as rr

    class ByLength:
        def score(self, query, passages):
            return [-float(len(p)) for p in passages]

    monkeypatch.setattr(rr.CrossEncoder, "load", staticmethod(lambda key, **kw: ByLength()))
    assert run(capsys, "index", "create", "papers", "--model", "fake")[0] == 0
    assert run(capsys, "index", "add", "papers", str(home / "docs" / "papers.jsonl"))[0] == 0
    q = ["search", "papers", "summer beach", "-k", "3", "--mode", "hybrid", "--json"]
    plain = [h["id"] for h in json.loads(run(capsys, *q)[1])]
    code, out, _ = run(capsys, *q, "--rerank", "ce", "--rerank-top", "3", "--rerank-weight", "0")
    hits = json.loads(out)
    assert code == 0 and [h["id"] for h in hits] == plain and "first_stage" in hits[0]["scores"]
    code, out, _ = run(capsys, *q, "--rerank", "ce", "--rerank-top", "3", "--rerank-weight", "1")
    hits = json.loads(out)
    assert [len(h["text"]) for h in hits] == sorted(len(h["text"]) for h in hits)
    code, _, err = run(capsys, "search", "papers", "x", "--rerank", "ce", "--rerank-weight", "1.5")
    assert code == 2 and "rerank_weight must be a number from 0 to 1" in err
