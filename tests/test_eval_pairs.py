"""Evaluation inputs beyond the files the evaluators were written for (issue 17): `eval sts` on any pairs file
(TSV / CSV with a header, JSONL; columns by name or by flag; any score range) and `eval beir
--ignore-identical-ids` (MTEB's rule for ArguAna-style sets), in Python and on the CLI."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

import encoderkit
from encoderkit.cli import main
from encoderkit.evaluate.beir import evaluate_beir
from encoderkit.evaluate.pairs import PairColumns, load_pairs
from encoderkit.evaluate.sts import evaluate_sts
from store_fakes import FakeEncoder

PAIRS = [("a man plays a guitar", "a man is playing guitar", 4.8), ("a dog runs", "a cat sleeps", 0.5),
         ("kids swim in a lake", "children are swimming", 3.9), ("stock prices fell", "the sun is hot", 0.0)]


def write_pairs(tmp_path, scale: float = 1.0) -> dict[str, object]:
    """The same pairs as TSV, CSV (with quoting and a comma inside a sentence) and JSONL."""
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("sentence1\tsentence2\tscore\n" + "".join(f"{a}\t{b}\t{s * scale}\n" for a, b, s in PAIRS),
                   encoding="utf-8")
    csv_ = tmp_path / "pairs.csv"
    csv_.write_text("id,score,sentence2,sentence1\n" + "".join(
        f'{i},{s * scale},"{b}, indeed","{a}"\n' for i, (a, b, s) in enumerate(PAIRS)), encoding="utf-8")
    jl = tmp_path / "pairs.jsonl"
    jl.write_text("".join(json.dumps({"s1": a, "s2": b, "label": s * scale}) + "\n" for a, b, s in PAIRS),
                  encoding="utf-8")
    return {"tsv": tsv, "csv": csv_, "jsonl": jl}


def test_pairs_files_are_read_by_column_name_in_any_order(tmp_path):
    files = write_pairs(tmp_path)
    s1, s2, gold = load_pairs(files["tsv"])
    assert s1[0] == PAIRS[0][0] and s2[1] == PAIRS[1][1] and gold.tolist() == [p[2] for p in PAIRS]
    s1, s2, gold = load_pairs(files["csv"])  # columns out of order, quoted fields with commas
    assert s1[2] == PAIRS[2][0] and s2[0] == PAIRS[0][1] + ", indeed" and gold.tolist() == [p[2] for p in PAIRS]
    s1, s2, gold = load_pairs(files["jsonl"], PairColumns("s1", "s2", "label"))
    assert s1 == [p[0] for p in PAIRS] and gold.tolist() == [p[2] for p in PAIRS]


def test_bad_pairs_files_fail_with_the_line_and_the_columns_there(tmp_path):
    files = write_pairs(tmp_path)
    with pytest.raises(ValueError, match=r"no column 'sentence1', 'sentence2', 'score'; the file has 's1', 's2', "
                                         r"'label' \(name them with --sentence1"):
        load_pairs(files["jsonl"])
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence1\tsentence2\tscore\nx\ty\t1\nx\ty\thigh\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.tsv:3: score 'high' is not a number"):
        load_pairs(bad)
    flat = tmp_path / "flat.tsv"
    flat.write_text("sentence1\tsentence2\tscore\nx\ty\t2\nu\tv\t2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="same score 2"):
        load_pairs(flat)
    empty_text = tmp_path / "e.jsonl"
    empty_text.write_text('{"sentence1": "x", "sentence2": "", "score": 1}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"e\.jsonl:1: column 'sentence2' is empty"):
        load_pairs(empty_text)


def test_spearman_is_the_same_whatever_the_file_format_and_score_range(tmp_path):
    enc = FakeEncoder()
    base = evaluate_sts(write_pairs(tmp_path)["tsv"], enc)
    (tmp_path / "x10").mkdir()
    scaled = write_pairs(tmp_path / "x10", scale=10.0)  # 0-50 instead of 0-5: same ranks
    for name, cols in (("tsv", None), ("csv", None), ("jsonl", PairColumns("s1", "s2", "label"))):
        res = evaluate_sts(scaled[name], enc, columns=cols)
        if name != "csv":  # the csv's second sentences differ (", indeed")
            assert res["spearman"] == base["spearman"]
        assert res["pairs"] == 4 and res["score_range"] == [0.0, 48.0] and res["file"] == scaled[name].name


def test_eval_sts_cli_takes_column_flags_and_checks_the_file_before_loading_the_model(tmp_path, monkeypatch,
                                                                                       capsys):
    loads = []
    monkeypatch.setattr(encoderkit, "load", lambda name, **kw: loads.append(name) or FakeEncoder(name="fake"))
    jl = write_pairs(tmp_path)["jsonl"]
    assert main(["eval", "sts", str(jl), "--sentence1", "s1", "--sentence2", "s2", "--score", "label", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pairs"] == 4 and -1 <= out["spearman"] <= 1 and loads == ["sentence-transformers/all-MiniLM-L6-v2"]
    assert main(["eval", "sts", str(jl)]) == 2
    assert "no column 'sentence1'" in capsys.readouterr().err and len(loads) == 1  # refused before the model


def test_eval_sts_prints_numbers_people_read(tmp_path, monkeypatch, capsys):
    """The plain report names the file and prints "seconds 1.2 s", not "seconds 1.2000"; counts with separators."""
    monkeypatch.setattr(encoderkit, "load", lambda name, **kw: FakeEncoder(name="fake"))
    tsv = write_pairs(tmp_path, scale=250.0)["tsv"]
    assert main(["eval", "sts", str(tsv)]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["file"] == "pairs.tsv" and lines["pairs"] == "4" and lines["score_range"] == "0.0 – 1200.0"
    assert re.fullmatch(r"\d+\.\d s", lines["seconds"]), lines["seconds"]
    assert re.fullmatch(r"-?\d\.\d{4}", lines["spearman"])


def arguana_like(tmp_path):
    """A BEIR folder whose queries are corpus documents too (same ids), the ArguAna layout: each query's
    nearest document is itself, its judged counter-argument comes second."""
    b = tmp_path / "arg"
    (b / "qrels").mkdir(parents=True)
    docs = {"a1": "cats are better pets than dogs", "a2": "dogs are better pets than cats loyal",
            "b1": "taxes on sugar cut obesity", "b2": "sugar taxes hurt the poor and not obesity"}
    (b / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in docs.items()),
                                    encoding="utf-8")
    (b / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": docs[i]}) + "\n" for i in ("a1", "b1")),
                                     encoding="utf-8")
    (b / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\na1\ta2\t1\nb1\tb2\t1\n", encoding="utf-8")
    return b


@pytest.mark.parametrize("mode", ["vector", "hybrid"])
def test_ignore_identical_ids_drops_the_query_itself_from_its_results(tmp_path, mode):
    b = arguana_like(tmp_path)
    plain = evaluate_beir(b, FakeEncoder(), mode=mode, k=2)
    assert plain["mrr@10"] == pytest.approx(0.5)  # the query itself ranks first, the judged doc second
    skip = evaluate_beir(b, FakeEncoder(), mode=mode, k=2, ignore_identical_ids=True)
    assert skip["mrr@10"] == 1.0 and skip["ndcg@10"] == 1.0 and skip["ignore_identical_ids"] is True
    assert np.isclose(skip["recall@100"], 1.0)


def test_eval_beir_cli_ignore_identical_ids(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(encoderkit, "load", lambda name, **kw: FakeEncoder(name="fake"))
    b = arguana_like(tmp_path)
    assert main(["eval", "beir", str(b), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mrr@10"] == pytest.approx(0.5)
    assert main(["eval", "beir", str(b), "--mode", "vector,keyword", "--ignore-identical-ids", "--json"]) == 0
    modes = json.loads(capsys.readouterr().out)["modes"]
    assert [r["mrr@10"] for r in modes] == [1.0, 1.0]


def test_eval_beir_checks_the_folder_before_the_model_loads(tmp_path, monkeypatch, capsys):
    loads = []
    monkeypatch.setattr(encoderkit, "load", lambda name, **kw: loads.append(name) or FakeEncoder(name="fake"))
    b = arguana_like(tmp_path)
    (b / "qrels" / "test.tsv").unlink()
    assert main(["eval", "beir", str(b)]) == 2
    err = capsys.readouterr().err
    assert "test.tsv not found: a BEIR folder has corpus.jsonl, queries.jsonl and qrels/test.tsv" in err
    assert main(["eval", "beir", str(tmp_path / "nowhere"), "--mode", "late"]) == 2
    assert "corpus.jsonl not found" in capsys.readouterr().err and loads == []


@pytest.mark.slow  # one encoding of STS-B test's 2,700 unique sentences with the real model: ~1-2 min
def test_sts_b_as_a_jsonl_or_tsv_pairs_file_gives_the_spearman_of_the_original_file(tmp_path):
    from conftest import data_path
    from encoderkit.evaluate.pairs import read_sts_benchmark

    original = data_path("stsbenchmark", "sts-test.csv")
    s1, s2, gold = read_sts_benchmark(original)
    jl, tsv = tmp_path / "sts.jsonl", tmp_path / "sts.tsv"
    jl.write_text("".join(json.dumps({"a": a, "b": b, "sim": g / 5}) + "\n" for a, b, g in zip(s1, s2, gold)),
                  encoding="utf-8")
    tsv.write_text("sentence1\tsentence2\tscore\n" + "".join(f"{a}\t{b}\t{g}\n" for a, b, g in zip(s1, s2, gold)),
                   encoding="utf-8")

    class Once:
        """The real model, encoding a given list of texts once (the three files hold the same sentences)."""

        def __init__(self, enc):
            self.enc, self.memo = enc, {}

        def encode(self, texts, **kw):
            key = tuple(texts)
            if key not in self.memo:
                self.memo[key] = self.enc.encode(texts, **kw)
            return self.memo[key]

    enc = Once(encoderkit.load("all-MiniLM-L6-v2"))
    old = evaluate_sts(original, enc)
    new = evaluate_sts(jl, enc, columns=PairColumns("a", "b", "sim"))
    plain = evaluate_sts(tsv, enc)
    assert len(enc.memo) == 1  # the same sentences in the same order from all three readers
    assert old["pairs"] == new["pairs"] == plain["pairs"] == 1379
    assert old["spearman"] == new["spearman"] == plain["spearman"] == pytest.approx(0.8203, abs=0.005)
    assert new["score_range"] == [0.0, 1.0] and old["score_range"] == [0.0, 5.0]
