"""`evaluate_beir(mode="late")` / `encoderkit eval beir --mode late`: exact MaxSim of every query against every
document, the corpus encoded and scored block by block (evaluate/beir.py late_run), equals brute force (each pair's
MaxSim from the token vectors encode(output="multivector") gives, sorted), for a tiny ColBERT and for a plain
model's own token vectors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import encoderkit
from encoderkit.evaluate.beir import evaluate_beir, late_run, load_beir
from encoderkit.evaluate.metrics import evaluate
from encoderkit.multivector import add_colbert_head
from encoderkit.tasks.maxsim import maxsim
from tiny_checkpoints import TINY_VOCAB, sentences, tiny_family_folder

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    return tiny_family_folder("bert", tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def beir(tmp_path_factory):
    """150 random-word documents (titled), 9 queries made of words of their relevant document."""
    b = tmp_path_factory.mktemp("beir")
    (b / "qrels").mkdir()
    docs = sentences(150, TINY_VOCAB, seed=11, min_len=3, max_len=40)
    queries = {f"q{i}": " ".join(docs[3 * i + 1].split()[:3]) for i in range(9)}
    (b / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": f"w{i}", "text": t}) + "\n"
                                            for i, t in enumerate(docs)), encoding="utf-8")
    (b / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()),
                                     encoding="utf-8")
    (b / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\td{3 * i + 1}\t1\n" for i in range(9)), encoding="utf-8")
    return b


def _brute(enc, data, k):
    Q = enc.encode_query(list(data.queries.values()), output="multivector")
    D = enc.encode_document(data.doc_texts(), output="multivector")
    run = {}
    for qid, qv in zip(data.queries, Q):
        s = np.array([maxsim(qv, dv) for dv in D])
        top = np.argsort(-s, kind="stable")[:k]
        run[qid] = {data.doc_ids()[j]: float(s[j]) for j in top}
    return run


def _models(dense):
    plain = encoderkit.load(dense)
    plain.token_late = True  # its own normalized token vectors
    colbert = encoderkit.load(dense)
    torch.manual_seed(0)
    add_colbert_head(colbert, 16, query_length=8, document_length=24)
    return {"plain": plain, "colbert": colbert}


@pytest.mark.parametrize("kind", ["plain", "colbert"])
@pytest.mark.parametrize("block", [7, 512], ids=["blocks_of_7", "one_block"])
def test_late_run_equals_brute_force_maxsim(dense, beir, kind, block):
    enc = _models(dense)[kind]
    data = load_beir(beir)
    want = _brute(enc, data, 10)
    # blocks of 7: the running top 10 merges across 22 blocks; one block: scored in sub-blocks of 64 documents
    got = late_run(enc, data, k=10, block=block, batch_size=4)
    assert list(got) == list(want)
    for qid in want:
        w, g = want[qid], got[qid]
        assert sorted(w.values(), reverse=True) == pytest.approx(sorted(g.values(), reverse=True), abs=1e-5)
        kth = min(w.values())
        assert {d for d, s in w.items() if s > kth + 1e-4} <= set(g), qid  # the same documents (ties at the cut aside)
    m = evaluate_beir(beir, enc, mode="late", k=10)
    assert m["mode"] == "late" and m["queries"] == 9 and m["documents"] == 150
    ref = evaluate(data.qrels, want, ["ndcg@10"])
    assert m["ndcg@10"] == pytest.approx(ref["ndcg@10"], abs=1e-4)


def test_plain_model_late_needs_no_flag_in_eval(dense, beir):
    enc = encoderkit.load(dense)  # token_late unset: evaluation asks for the plain token vectors itself
    assert evaluate_beir(beir, enc, mode="late", k=10)["queries"] == 9


def test_cli_eval_beir_late(dense, beir, capsys):
    from encoderkit.cli import main

    assert main(["eval", "beir", str(beir), "--model", str(dense), "--mode", "late", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "late" and out["queries"] == 9
    with pytest.raises(SystemExit):  # an argparse usage error
        main(["eval", "beir", str(beir), "--model", str(dense), "--mode", "late,vector"])
    assert "on its own" in capsys.readouterr().err
    assert main(["eval", "beir", str(beir), "--model", str(dense), "--mode", "late", "--rerank", "x"]) == 2
    assert "no --rerank" in capsys.readouterr().err
