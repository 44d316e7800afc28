"""Hard-negative mining from a collection: the rank window and margin filters hold, positives are never
negatives (by id or by text), every search mode works, and `encoderkit mine` writes the JSONL or fails in one line."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import encoderkit
from encoderkit.checkpoints.hub import packaged_folder
from encoderkit.cli import main
from encoderkit.store import Collection
from encoderkit.tasks.hard_negatives import mine_hard_negatives

transformers = pytest.importorskip("transformers")

TOPICS = ["heart disease", "vitamin supplements", "cancer cells", "protein folding", "brain neurons",
          "malaria parasites"]
WORDS = ["study", "patients", "trial", "levels", "risk", "effect", "gene", "dose", "mice", "blood", "cohort", "rate"]


def _corpus():
    docs = {}
    for t, topic in enumerate(TOPICS):
        for k in range(6):
            w = [WORDS[(t * 3 + k + j) % len(WORDS)] for j in range(4)]
            docs[f"d{t}_{k}"] = f"{topic} {' '.join(w)} finding number {k}"
    docs["dup0"] = docs["d0_0"]  # the positive of query 0 again under another id: still a positive
    return docs


QUERIES = {t: f"what is known about {topic} {WORDS[t]}" for t, topic in enumerate(TOPICS)}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=128)
    transformers.BertModel(cfg).eval().save_pretrained(path)
    src = packaged_folder("sentence-transformers/all-MiniLM-L6-v2")
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / f, path / f)
    return path


@pytest.fixture(scope="module")
def collection(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("col") / "corpus"
    enc = encoderkit.load(str(tiny_model))
    col = Collection.open(path, enc)
    docs = _corpus()
    col.add(list(docs.values()), ids=list(docs))
    yield col
    col.close()


def _pairs():
    docs = _corpus()
    return [{"query": QUERIES[t], "positive": docs[f"d{t}_0"], "positive_id": f"d{t}_0"} for t in range(len(TOPICS))] + \
        [{"query": QUERIES[1], "positive": docs["d1_1"], "positive_id": "d1_1"}]  # a query with two positives


def _cos(enc, a, b):
    x, y = enc.encode([a, b], normalize=True)
    return float(x @ y)


def _positive_sets():
    docs = _corpus()
    pos = {}
    for p in _pairs():
        pos.setdefault(p["query"], set()).add(p["positive"])
    return pos, docs


def test_positives_never_negatives_in_every_mode(collection):
    pos, _ = _positive_sets()
    for mode in ("vector", "keyword", "hybrid"):
        recs, stats = mine_hard_negatives(collection, _pairs(), mode=mode, num_negatives=4, range_max=20)
        assert stats.written == len(recs) == len(_pairs()), mode
        for r in recs:
            assert len(r["negatives"]) == 4 == len(set(r["negatives"]))
            assert not set(r["negatives"]) & pos[r["query"]], mode  # "dup0" (same text as d0_0) is excluded too


def test_rank_window_and_margins_hold(collection):
    enc = collection.encoder
    pos, _ = _positive_sets()
    recs, _ = mine_hard_negatives(collection, _pairs(), num_negatives=3, range_min=2, range_max=9, scores=True)
    assert recs
    for r in recs:
        ranked = [h.text for h in collection.search(r["query"], k=40)]
        ranked = [t for t in ranked if t not in pos[r["query"]]]
        assert all(2 <= ranked.index(n) < 9 for n in r["negatives"])
        assert r["negatives"] == ranked[2:5]  # "top" sampling: the best-ranked of the window
        assert abs(r["scores"][0] - _cos(enc, r["query"], r["positive"])) <= 1e-5
    for kw in ({"absolute_margin": 0.005}, {"relative_margin": 0.005}, {"max_score": 0.92}, {"min_score": 0.9}):
        recs, stats = mine_hard_negatives(collection, _pairs(), num_negatives=2, range_max=30, **kw)
        assert recs and stats.dropped[next(iter(kw))] > 0, (kw, stats)  # the filter bit, and some survived
        for r in recs:
            p = min(_cos(enc, r["query"], t) for t in pos[r["query"]])  # the hardest positive sets the bar
            for n in r["negatives"]:
                s = _cos(enc, r["query"], n)
                if "absolute_margin" in kw:
                    assert s + kw["absolute_margin"] <= p + 1e-6
                if "relative_margin" in kw:
                    assert s <= p - abs(p) * kw["relative_margin"] + 1e-6
                if "max_score" in kw:
                    assert s <= kw["max_score"] + 1e-6
                if "min_score" in kw:
                    assert s >= kw["min_score"] - 1e-6
    # an impossible margin leaves no negatives: every pair is reported short, none written
    recs, stats = mine_hard_negatives(collection, _pairs(), absolute_margin=5.0)
    assert recs == [] and stats.short == len(_pairs()) and stats.dropped["absolute_margin"] > 0
    # random sampling is seeded and stays within the survivors
    a, _ = mine_hard_negatives(collection, _pairs(), sampling="random", seed=3, range_max=12)
    b, _ = mine_hard_negatives(collection, _pairs(), sampling="random", seed=3, range_max=12)
    assert a == b


@pytest.mark.parametrize("kw,match", [
    ({"num_negatives": 0}, "num_negatives"), ({"range_min": 5, "range_max": 5}, "range_max"),
    ({"num_negatives": 5, "range_max": 3}, "cannot mine 5"), ({"absolute_margin": -1.0}, "absolute_margin"),
    ({"sampling": "best"}, "sampling"), ({"min_score": 0.9, "max_score": 0.1}, "min_score"),
])
def test_bad_arguments(collection, kw, match):
    with pytest.raises(ValueError, match=match):
        mine_hard_negatives(collection, _pairs(), **kw)
    with pytest.raises(ValueError, match="non-empty strings"):
        mine_hard_negatives(collection, [("q", "")])
    with pytest.raises(ValueError, match="no \\(query, positive\\) pairs"):
        mine_hard_negatives(collection, [])


def test_cli_writes_jsonl(collection, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in _pairs()))
    out = tmp_path / "mined.jsonl"
    assert main(["mine", str(collection.path), "--pairs", str(pairs), "--out", str(out), "-n", "2",
                 "--mode", "hybrid", "--relative-margin", "0.0", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert summary["written"] == len(lines) > 0
    pos, _ = _positive_sets()
    for r in lines:
        assert set(r) == {"query", "positive", "negatives"} and len(r["negatives"]) == 2
        assert not set(r["negatives"]) & pos[r["query"]]
    # a BEIR folder and a TSV give the same pairs
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    docs = _corpus()
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in docs.items()))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{t}", "text": q}) + "\n" for t, q in QUERIES.items()))
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                             "".join(f"q{t}\td{t}_0\t1\n" for t in QUERIES) + "q1\td1_1\t1\n")
    out2 = tmp_path / "beir.jsonl"
    assert main(["mine", str(collection.path), "--pairs", str(beir), "--out", str(out2), "-n", "2", "--mode",
                 "hybrid", "--relative-margin", "0.0"]) == 0
    assert sorted(map(json.dumps, lines)) == sorted(json.dumps(json.loads(x)) for x in out2.read_text().splitlines())


@pytest.mark.parametrize("extra,match", [
    (["--range-min", "4", "--range-max", "2"], "range_max"),
    (["-n", "0"], "num_negatives"),
    (["--absolute-margin", "nan"], "finite"),
    (["--pairs-bad"], None),
])
def test_cli_errors_are_one_line(collection, tmp_path, capsys, extra, match):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps(_pairs()[0]) + "\n")
    args = ["mine", str(collection.path), "--pairs", str(pairs), "--out", str(tmp_path / "o.jsonl")]
    if extra == ["--pairs-bad"]:
        pairs.write_text('{"query": "q"}\n')
        match = "expected an object with"
        extra = []
    assert main(args + extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("encoderkit mine: error:") and match in err
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_missing_inputs(tmp_path, capsys):
    pairs = tmp_path / "p.tsv"
    pairs.write_text("q\tp\n")
    assert main(["mine", str(tmp_path / "nope"), "--pairs", str(pairs), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "no collection" in capsys.readouterr().err
    assert main(["mine", str(tmp_path / "nope"), "--pairs", str(tmp_path / "x.jsonl"), "--out", "o.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and len(err.strip().splitlines()) == 1
    pairs.write_text("only-one-column\n")
    assert main(["mine", str(tmp_path / "nope"), "--pairs", str(pairs), "--out", "o.jsonl"]) == 2
    assert "expected query<TAB>positive" in capsys.readouterr().err
