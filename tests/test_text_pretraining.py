"""Text pre-training on real data: a small BERT learns masked-language modelling from the SciFact abstracts
(5,183 documents, the last 300 held out, 128-token blocks, the all-MiniLM-L6-v2 WordPiece vocabulary), and
ELECTRA with the same steps learns replaced-token detection.

Masked-token accuracy is taken over ALL selected positions of the held-out blocks ([MASK]ed, randomized and
unchanged alike) with one fixed masking draw; its baseline predicts the commonest training token at the very
same positions. ELECTRA's discriminator accuracy is over every real token; its baseline always answers
"original" (1 - the fraction of tokens the generator replaced).

Measured (seed 0, dropout 0, one epoch = 1,903 steps of 8 blocks, H=128, 2 layers, lr 2e-3 with 100 warmup steps
then cosine; 4 min on 2 quiet cores, 8 min beside another job): masked-token accuracy 12.58% vs 4.68% for the most
frequent token (".") on the same 14,438 positions: 2.69x, NOT the 3x issue #4 asks for. The same recipe over two
epochs reached 13.23% (2.83x) and was flattening; a 16,000- or 8,000-piece WordPiece vocabulary trained on the
corpus, a wider model (H=256, slower from the start) or a higher peak rate (5e-3: collapses to always "." ) did not
do better. The earlier recipe (batch 32, lr 1e-3, dropout 0.1, 476 steps) gave 7.00% (1.50x): smaller batches (more
updates for the same tokens) and no dropout doubled what the model learns from one pass.
ELECTRA with the same one-epoch recipe (generator H=32): discriminator RTD accuracy 86.011% = the always-"original"
baseline 86.011% (its loss 0.405 is the entropy of the 14.0% replaced rate), generator MLM accuracy 9.73% vs 4.52%;
so no ELECTRA figure is asserted here yet."""
from __future__ import annotations

import json

import pytest

from conftest import data_path

SETTINGS = dict(seq_len=128, hidden=128, layers=2, heads=2)


def _run(kind: str) -> dict:
    from encoderkit.train.recipes.text import PRETRAIN_DEFAULTS, default_tokenizer_file, pretrain_text, read_texts
    from encoderkit.train.trainer import TrainConfig

    texts = read_texts(data_path("scifact", "corpus.jsonl"))
    assert len(texts) == 5183
    cfg = TrainConfig(**{**PRETRAIN_DEFAULTS, "progress": False, "seed": 0})  # epoch 1, batch 8, lr 2e-3, 100 warmup
    _, metrics, history = pretrain_text(kind, texts, default_tokenizer_file(), cfg, eval_fraction=300 / 5183,
                                        seed=0, **SETTINGS)
    print(f"\n{kind} on SciFact abstracts: " + json.dumps(metrics, indent=1))
    assert history[-1]["train_loss"] < history[0]["train_loss"] or len(history) == 1
    return metrics


@pytest.mark.slow
def test_mlm_beats_most_frequent_token():
    m = _run("mlm")
    base = m["eval_most_frequent_token_accuracy"]
    assert 0.01 < base < 0.10, m  # the commonest token ("." or "the") at the selected positions
    assert m["eval_mlm_accuracy"] >= 2.4 * base, m  # measured 2.69x (target 3x not reached yet)


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
