"""encoderkit.integrations.mteb: mteb's own retrieval evaluator, run offline on a local SciFact subset through a
task that reads our BEIR folder, gives all-MiniLM-L6-v2 the NDCG@10 that `encoderkit eval beir` gives on the same
subset (1e-4); prompts follow mteb's priority (task name, task type, query/document side). The subset (30 queries,
their judged documents and 200 others) is what the claim needs: the same ranking scored by two evaluators; each side
encodes it once, so its size is the test's cost."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import data_path

mteb = pytest.importorskip("mteb")
from encoderkit.integrations.mteb import MTEBEncoder, beir_task, subset_beir  # noqa: E402

N_QUERIES, N_EXTRA_DOCS = 30, 200


def _subset(folder):
    """The first N_QUERIES judged test queries and a corpus of their judged documents plus N_EXTRA_DOCS others."""
    from encoderkit.evaluate.beir import load_beir

    data = load_beir(folder, "test")
    qids = list(data.queries)[:N_QUERIES]
    docs = [d for q in qids for d in data.qrels[q]] + list(data.corpus)[:N_EXTRA_DOCS]
    return subset_beir(data, qids, docs)


def _write_beir(data, out):
    """The subset as a BEIR folder, for `encoderkit eval beir`."""
    (out / "qrels").mkdir(parents=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as f:
        for d in data.corpus.values():
            f.write(json.dumps(d) + "\n")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as f:
        for q, t in data.queries.items():
            f.write(json.dumps({"_id": q, "text": t}) + "\n")
    with open(out / "qrels" / "test.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{q}\t{d}\t{r}\n" for q, rels in data.qrels.items() for d, r in rels.items())
    return out


@pytest.mark.slow
def test_mteb_retrieval_evaluator_matches_eval_beir_on_scifact_subset(tmp_path, capsys):
    import encoderkit
    from encoderkit.cli import main

    folder = data_path("scifact")
    data = _subset(folder)
    sub = _write_beir(data, tmp_path / "scifact_subset")
    assert main(["eval", "beir", str(sub), "--model", "all-MiniLM-L6-v2", "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)["ndcg@10"]

    task = beir_task(folder, query_ids=list(data.queries), doc_ids=list(data.corpus))
    model = MTEBEncoder(encoderkit.load("all-MiniLM-L6-v2"))
    result = mteb.evaluate(model, task, cache=None, show_progress_bar=False)
    scores = result.task_results[0].scores["test"][0]
    print(f"SciFact subset ({len(data.queries)} queries, {len(data.corpus)} documents): NDCG@10 eval beir {ours:.5f}, "
          f"mteb {scores['ndcg_at_10']:.5f}")
    assert len(data.corpus) > N_EXTRA_DOCS and len(data.queries) == N_QUERIES
    assert 0.3 < ours < 0.99  # a real ranking, not a trivial one
    assert scores["ndcg_at_10"] == pytest.approx(ours, abs=1e-4)


def _tiny_encoder(tmp_path, prompts):
    import encoderkit
    from tiny_checkpoints import tiny_family_folder

    return encoderkit.load(tiny_family_folder("bert", tmp_path, prompts=prompts))


def test_prompts_follow_mteb_priority_task_name_then_type_then_side(tmp_path):
    from mteb.types import PromptType

    enc = _tiny_encoder(tmp_path, {"query": "w1 ", "document": ""})
    task = beir_task(data_path("scifact"), name="LocalSciFact", query_ids=["1"], doc_ids=["31715818"])
    meta = task.metadata
    own = MTEBEncoder(enc)
    assert own.prompt_for(meta, PromptType.query) == "w1 "  # the checkpoint's own query prompt
    assert own.prompt_for(meta, PromptType.document) == ""
    custom = MTEBEncoder(enc, prompts={"query": "w2 ", "Retrieval-query": "w3 ", "LocalSciFact-query": "w4 ",
                                       "Retrieval": "w5 "})
    assert custom.prompt_for(meta, PromptType.query) == "w4 "  # task name + side beats task type + side
    assert custom.prompt_for(meta, PromptType.document) == "w5 "  # task type beats nothing for documents


def test_encode_reads_mteb_batches_in_order_with_the_chosen_prompt(tmp_path):
    from mteb.types import PromptType
    from torch.utils.data import DataLoader
    from datasets import Dataset

    enc = _tiny_encoder(tmp_path, {"query": "w1 w2 ", "document": ""})
    task = beir_task(data_path("scifact"), query_ids=["1"], doc_ids=["31715818"])
    texts = ["w3 w4", "w5", "w6 w7 w8 w9", "w10 w11"]
    loader = DataLoader(Dataset.from_dict({"text": texts}), batch_size=3)
    got = MTEBEncoder(enc).encode(loader, task_metadata=task.metadata, hf_split="test", hf_subset="default",
                                  prompt_type=PromptType.query)
    want = enc.encode(texts, prompt="w1 w2 ")
    assert got.shape == (4, enc.dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.allclose(got, enc.encode(texts, prompt=""), atol=1e-4)  # the prompt really went in


def test_bad_inputs_are_named(tmp_path):
    from encoderkit.evaluate.beir import load_beir

    data = load_beir(data_path("scifact"), "test")
    q = next(iter(data.queries))
    with pytest.raises(ValueError, match="which the subset drops"):
        subset_beir(data, [q], ["4983"])
    with pytest.raises(ValueError, match="no judgments"):
        subset_beir(data, ["no-such-query"], None)
    with pytest.raises(TypeError, match="model name, a folder or an encoderkit Encoder"):
        MTEBEncoder(42)
