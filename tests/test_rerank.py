"""Cross-encoders: *ForSequenceClassification checkpoints load and match transformers' logits."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from encoderkit.checkpoints.hub import packaged_folder
from encoderkit.checkpoints.weights import CheckpointError
from encoderkit.tasks.rerank import CrossEncoder

transformers = pytest.importorskip("transformers")
TOK_DIR = packaged_folder("sentence-transformers/all-MiniLM-L6-v2")
SMALL = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             max_position_embeddings=512)


def _save(model, path):
    model.save_pretrained(path)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(TOK_DIR / f, path / f)


CASES = {
    "bert": lambda n: transformers.BertForSequenceClassification(transformers.BertConfig(**SMALL, num_labels=n)),
    "roberta": lambda n: transformers.RobertaForSequenceClassification(
        transformers.RobertaConfig(**SMALL, num_labels=n, pad_token_id=0, type_vocab_size=1)),
    "electra": lambda n: transformers.ElectraForSequenceClassification(
        transformers.ElectraConfig(**SMALL, embedding_size=16, num_labels=n)),
    "distilbert": lambda n: transformers.DistilBertForSequenceClassification(transformers.DistilBertConfig(
        vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=48, num_labels=n)),
    "albert": lambda n: transformers.AlbertForSequenceClassification(transformers.AlbertConfig(
        **SMALL, embedding_size=16, num_labels=n)),
}


@pytest.mark.parametrize("family", list(CASES))
@pytest.mark.parametrize("num_labels", [1, 3])
def test_logits_match_transformers(family, num_labels, tmp_path):
    torch.manual_seed(0)
    ref = CASES[family](num_labels).eval()
    _save(ref, tmp_path)
    ce = CrossEncoder.load(tmp_path)
    pairs = [("what is a heap", "A heap is a tree-based data structure."), ("q", "an unrelated passage " * 10),
             ("short", "x")]
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    batch = tok([p[0] for p in pairs], [p[1] for p in pairs], padding=True, return_tensors="pt")
    if family in ("roberta", "distilbert"):
        batch.pop("token_type_ids", None)
    with torch.no_grad():
        want = ref(**batch).logits.numpy()
    got = ce.logits(pairs)
    assert got.shape == (3, num_labels)
    assert np.abs(got - want).max() <= 1e-5
    scores = ce.score(pairs[0][0], [p[1] for p in pairs])
    assert scores.shape == (3,)
    ranked = ce.rerank(pairs[0][0], [p[1] for p in pairs])
    assert [s for _, s in ranked] == sorted(scores.tolist(), reverse=True)


def test_refuses_non_classifier(tmp_path):
    transformers.BertModel(transformers.BertConfig(**SMALL)).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="ForSequenceClassification"):
        CrossEncoder.load(tmp_path)


def test_bad_pairs(tmp_path):
    _save(CASES["bert"](1).eval(), tmp_path)
    ce = CrossEncoder.load(tmp_path)
    with pytest.raises(TypeError, match="pair 1"):
        ce.logits([("a", "b"), ("a", 3)])
    assert ce.score("q", []).shape == (0,)
