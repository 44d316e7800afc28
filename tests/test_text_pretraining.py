"""Text pre-training on real data: a small BERT learns masked-language modelling from the SciFact abstracts
(5,183 documents, the last 300 held out, 128-token blocks, the all-MiniLM-L6-v2 WordPiece vocabulary), and
ELECTRA with the same steps learns replaced-token detection.

Masked-token accuracy is taken over ALL selected positions of the held-out blocks ([MASK]ed, randomized and
unchanged alike) with one fixed masking draw; its baseline predicts the commonest training token at the very
same positions. ELECTRA's discriminator accuracy is over every real token; its baseline always answers
"original" (1 - the fraction of tokens the generator replaced).

Measured (seed 0, dropout 0, one epoch = 1,903 steps of 8 blocks, H=128, 4 layers, 4 heads, rotary positions,
lr 2e-3 with 100 warmup steps then cosine; 5.6 min on one thread): masked-token accuracy 15.85% vs 4.68% for the
most frequent token (".") on the same 14,438 positions: 3.39x, on the AVX-512 host of 2026-12-01 (that host also
measured every figure below); the same code on an AVX2-only host: 13.76-13.93% (2.94-2.98x; see the MLM test).
What got it there, same data and steps:
  BERT's learned absolute position table, 2 layers, 2 heads:   12.58% (2.69x); two epochs 13.23% (2.83x)
  absolute, 2 layers, 4 heads:                                   12.54%
  rotary,   2 layers, 4 heads:                                   13.01%; two epochs 15.57% (3.33x)
  absolute, 4 layers, 4 heads:                                    4.68% (collapsed to always ".")
  rotary,   4 layers, 4 heads (the default):                     15.85% (3.39x)
The learned table starts from noise and takes most of a short run to tell positions apart (on a synthetic
copy-the-neighbour task neither it nor transformers' BertForMaskedLM of that size left chance in 900 steps);
RoPE gives relative offsets from the first step and lets the deeper model train. Also tried (absolute positions,
no better): batch 16 / lr 3e-3, lr 5e-3 (collapse), H=256, a corpus-trained 8k / 16k WordPiece vocabulary.
ELECTRA, same one-epoch recipe and discriminator (generator H=32, lambda 50): generator MLM accuracy 15.01% (most
frequent token 4.52%); discriminator replaced-token accuracy 86.42% = its always-"original" baseline 86.42% (loss
0.396 = the entropy of the 13.6% replaced rate: it has not learned to spot the generator's plausible samples in
one epoch; lr 1e-3 and 5e-4 gave the same). With the samples flattened to uniform (random vocabulary pieces) the
same discriminator learns at once (test below: 93.57% vs 85.44% after ~350 steps), so the objective and its
plumbing work, and the real task needs more steps than one SciFact epoch.
"""
from __future__ import annotations

import json

import pytest

from conftest import data_path

# The MLM test trains on the first 1,640 training abstracts (one epoch = 632 steps, the cosine schedule over them)
# and scores the same 300 held-out abstracts as the full run: a third of the full epoch's cost for the same claim
# ("beats the most frequent token by a clear factor"). Same recipe and seed, AVX-512 host:
#     632 steps (first 1,640 abstracts):   9.62% vs 4.68% = 2.06x   <- this test
#     947 steps (first 2,440 abstracts):  13.51% vs 4.68% = 2.89x
#   1,903 steps (all 4,883, the README):  15.85% vs 4.68% = 3.39x   (AVX2-only host: 13.76-13.93%, 2.94-2.98x)
# The same model untrained scores 0.00% on those positions, so the bar below fails without learning.
MLM_TRAIN_DOCS = 1640


def _run(kind: str, train_docs: int | None = None) -> dict:
    """pretrain_text on SciFact with PRETRAIN_DEFAULTS (one epoch); the last 300 abstracts are held out, and
    train_docs keeps only the first that many of the others (None: all 4,883 = 1,903 steps)."""
    from encoderkit.train.recipes.text import PRETRAIN_DEFAULTS, default_tokenizer_file, pretrain_text, read_texts
    from encoderkit.train.trainer import TrainConfig

    texts = read_texts(data_path("scifact", "corpus.jsonl"))
    assert len(texts) == 5183
    if train_docs is not None:
        texts = texts[:train_docs] + texts[-300:]
    cfg = TrainConfig(**{**PRETRAIN_DEFAULTS, "progress": False, "seed": 0})  # epoch 1, batch 8, lr 2e-3, 100 warmup
    # the model is PRETRAIN_MODEL's: 128-token blocks, H=128, 4 layers, 4 heads, rotary positions
    _, metrics, history = pretrain_text(kind, texts, default_tokenizer_file(), cfg, eval_fraction=300 / len(texts),
                                        seed=0)
    print(f"\n{kind} on SciFact abstracts: " + json.dumps(metrics, indent=1))
    assert metrics["eval_blocks"] == 881  # the same 300 held-out abstracts whatever train_docs is
    assert history[-1]["train_loss"] < history[0]["train_loss"] or len(history) == 1
    return metrics


@pytest.mark.slow
def test_mlm_beats_most_frequent_token():
    # 2.06x measured at 632 steps (AVX-512 host). The one-epoch figure moved 2.94-3.39x between hosts' CPU kernels
    # (same code, data, masks and initial weights bit for bit: 1,903 steps amplify last-bit rounding differences);
    # the AVX2 host's one-epoch figure was 13% under the AVX-512 host's, so a 1.6x bar leaves 22% for such a spread
    # (a CI host may be either); the untrained model's 0.00% fails it.
    m = _run("mlm", MLM_TRAIN_DOCS)
    assert m["train_blocks"] == 5050  # 632 steps of 8 blocks
    base = m["eval_most_frequent_token_accuracy"]
    assert 0.01 < base < 0.10, m  # the commonest token ("." or "the") at the selected positions
    assert m["eval_mlm_accuracy"] >= 1.6 * base, m  # measured 9.62% vs 4.68% (2.06x)


@pytest.mark.slow
def test_electra_discriminator_learns_to_spot_replacements():
    """The ELECTRA discriminator on SciFact blocks with the generator's samples flattened to uniform
    (temperature 1e4): a replaced token is then a random vocabulary piece, and after ~200 steps the
    discriminator must beat always-"original" clearly on held-out blocks. Measured: the first 600 documents
    (205 steps, 60 held out) 93.30% vs 85.10% (+8.2 points); the first 1,000 (~350 steps, the README row) 93.57%
    vs 85.44% (+8.1): the margin is there after 200 steps, so the test runs the shorter one. The untrained
    discriminator scores 30.6% on the same held-out blocks; one-epoch real samples stay at the baseline (README)."""
    from encoderkit.train.recipes.text import default_tokenizer_file, pretrain_text, read_texts
    from encoderkit.train.trainer import TrainConfig

    texts = read_texts(data_path("scifact", "corpus.jsonl"))[:600]
    cfg = TrainConfig(epochs=1, batch_size=8, lr=2e-3, warmup_steps=100, weight_decay=0.01, restore_best=False,
                      progress=False, seed=0)
    _, m, history = pretrain_text("electra", texts, default_tokenizer_file(), cfg, eval_fraction=0.1, seed=0,
                                  generator_temperature=1e4)
    print("\nELECTRA, uniform replacements: " + json.dumps(m, indent=1))
    assert 0.10 < m["eval_replaced_fraction"] < 0.16, m  # ~15% selected, nearly all replaced by a random piece
    assert m["eval_rtd_accuracy"] >= m["eval_rtd_baseline_accuracy"] + 0.04, m


def test_electra_reports_rtd_baseline_on_tiny_text():
    """Fast: the held-out ELECTRA metrics carry the always-"original" baseline and the replaced fraction."""
    from encoderkit.train.recipes.text import default_tokenizer_file, pretrain_text
    from encoderkit.train.trainer import TrainConfig

    words = "cells protein gene expression tumour growth factor binding receptor signal pathway".split()
    texts = [" ".join(words[(i + j) % len(words)] for j in range(40)) for i in range(24)]
    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-3, warmup_steps=1, restore_best=False, progress=False)
    enc, m, _ = pretrain_text("electra", texts, default_tokenizer_file(), cfg, seq_len=32, hidden=32, layers=1,
                              heads=2, eval_fraction=0.25, dropout=0.05)
    assert enc.config.dropout == enc.config.attention_dropout == 0.05
    with pytest.raises(ValueError, match="dropout must be in"):
        pretrain_text("mlm", texts, default_tokenizer_file(), cfg, dropout=1.0)
    assert 0.0 < m["eval_replaced_fraction"] < 0.3
    assert m["eval_rtd_baseline_accuracy"] == pytest.approx(1 - m["eval_replaced_fraction"])
    assert 0.0 <= m["eval_rtd_accuracy"] <= 1.0 and m["eval_masked_tokens"] > 0


def test_rotary_bert_sees_relative_positions_only():
    """Fast: with rotary positions (no learned table) shifting every position id by a constant leaves the
    output unchanged, as RoPE makes q.k depend on the offset only; the absolute model does change."""
    import torch

    from encoderkit.models.bert import BertConfig, BertModel
    from encoderkit.train.recipes.text import small_bert_config

    torch.manual_seed(0)
    ids = torch.randint(5, 200, (2, 12))
    att = torch.ones_like(ids)
    shifted = torch.arange(12).expand(2, 12) + 7
    gap = torch.cat([torch.arange(6), torch.arange(10, 16)]).expand(2, 12)  # offsets across the gap change
    outs = {}
    for positions in ("rotary", "absolute"):
        model = BertModel(small_bert_config(200, hidden=32, layers=2, heads=4, seq_len=32, positions=positions)).eval()
        with torch.no_grad():
            outs[positions] = (model(ids, att), model(ids, att, position_ids=shifted),
                               model(ids, att, position_ids=gap))
        assert (model.embeddings.position is None) == (positions == "rotary")
    assert torch.allclose(outs["rotary"][0], outs["rotary"][1], atol=1e-5)
    assert not torch.allclose(outs["rotary"][0], outs["rotary"][2], atol=1e-3)  # the ids do reach attention
    assert not torch.allclose(outs["absolute"][0], outs["absolute"][1], atol=1e-3)
    with pytest.raises(ValueError, match="unknown position_embedding_type 'alibi'"):
        BertModel(BertConfig(vocab_size=10, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=8,
                             position_embedding_type="alibi"))


def test_cli_mlm_run_is_a_text_encoder(tmp_path, capsys):
    """Fast: `encoderkit train mlm` writes a run folder that `encoderkit.load` opens as a text Encoder (rotary
    positions and the tokenizer kept); its vectors are the mean-pooled hidden states of the trained BERT."""
    import numpy as np
    import torch

    import encoderkit
    from encoderkit.cli import main
    from encoderkit.train.run import load_run

    words = "cells protein gene expression tumour growth factor binding receptor signal pathway".split()
    data = tmp_path / "corpus.txt"
    data.write_text("\n".join(" ".join(words[(i + j) % len(words)] for j in range(30)) for i in range(20)))
    run = tmp_path / "run"
    assert main(["train", "mlm", "--data", str(data), "--out", str(run), "--epochs", "1", "--batch-size", "4",
                 "--hidden", "32", "--layers", "1", "--heads", "2", "--seq-len", "32", "--eval-fraction", "0.2",
                 "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["recipe"] == "mlm" and summary["eval_masked_tokens"] > 0
    enc = encoderkit.load(run)
    assert enc.config.position_embedding_type == "rotary" and enc.dim == 32
    texts = ["protein binding receptor", "tumour growth factor signal pathway"]
    vecs = enc.encode(texts)
    model = load_run(run).model
    tok = enc.tokenizer
    for text, v in zip(texts, vecs):
        ids = torch.tensor([tok.encode(text).ids])
        with torch.no_grad():
            expect = model(ids, torch.ones_like(ids)).mean(1)[0].numpy()
        assert np.allclose(v, expect, atol=1e-5)


def test_rotary_bert_is_not_written_as_a_hugging_face_bert():
    """Fast: transformers' BERT has no rotary positions, so writing one as a BERT checkpoint is refused instead of
    producing a folder that loads with a random position table."""
    from encoderkit.checkpoints.bert_family import bert_to_hf_config
    from encoderkit.checkpoints.weights import CheckpointError
    from encoderkit.train.recipes.text import small_bert_config

    absolute = small_bert_config(100, hidden=32, positions="absolute")
    assert bert_to_hf_config(absolute)["position_embedding_type"] == "absolute"
    with pytest.raises(CheckpointError, match="rotary positions has no Hugging Face bert equivalent"):
        bert_to_hf_config(small_bert_config(100, hidden=32, positions="rotary"))
