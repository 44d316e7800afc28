"""ELECTRA replaced-token detection: the loss against a direct computation, sampling only at masked
positions and from the generator's distribution, lambda = 50, shared embeddings, and no gradient
through the sampling."""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from encoderkit.models.bert import BertConfig, BertModel
from encoderkit.objectives.mlm import IGNORE_INDEX, MaskedLanguageModel, mlm_loss
from encoderkit.objectives.rtd import Electra, replace_with_samples, rtd_loss


def test_rtd_loss_matches_direct_bce_over_real_tokens():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0]], dtype=torch.bool)
    att = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    total, n = 0.0, 0
    for b in range(2):
        for t in range(4):
            if not att[b, t]:
                continue
            p = 1 / (1 + math.exp(-logits[b, t].item()))
            total += -(math.log(p) if y[b, t] else math.log(1 - p))
            n += 1
    assert rtd_loss(logits, y, att).item() == pytest.approx(total / n, rel=1e-12)


def test_samples_only_at_masked_positions_and_follow_the_generator():
    V = 6
    ids = torch.tensor([[7, 2, 9, 4]])
    labels = torch.tensor([[IGNORE_INDEX, 2, IGNORE_INDEX, 4]])
    masked = torch.tensor([[7, 99, 9, 99]])
    logits = torch.zeros(1, 4, V)
    logits[0, 1] = torch.tensor([0.0, 1.0, 2.0, 0.5, -1.0, 0.0])
    logits[0, 3, 4] = 50.0  # the generator is sure of the original token 4 here
    g = torch.Generator().manual_seed(0)
    counts = [0] * V
    for _ in range(3000):
        corrupted, replaced = replace_with_samples(masked, logits, labels, generator=g)
        assert corrupted[0, 0] == 7 and corrupted[0, 2] == 9  # untouched
        assert corrupted[0, 3] == 4 and not replaced[0, 3]  # sample == original counts as original
        counts[int(corrupted[0, 1])] += 1
        assert bool(replaced[0, 1]) == (int(corrupted[0, 1]) != 2)
    p = torch.softmax(logits[0, 1], -1).tolist()
    assert stats.chisquare(counts, [x * 3000 for x in p]).pvalue > 1e-3, counts
    assert torch.equal(ids, torch.where(labels != IGNORE_INDEX, labels, masked))


def _tiny(vocab=40, hidden=16, emb=16, seed=0):
    torch.manual_seed(seed)
    return BertConfig(vocab_size=vocab, hidden_size=hidden, num_layers=1, num_heads=2, intermediate_size=2 * hidden,
                      max_position_embeddings=16, embedding_size=emb, dropout=0.0, attention_dropout=0.0)


def test_electra_loss_is_mlm_plus_50_rtd_with_shared_embeddings_and_no_grad_through_samples():
    gen = MaskedLanguageModel(BertModel(_tiny(hidden=8, emb=16)))  # smaller generator, shared E = 16
    disc = BertModel(_tiny(hidden=16, emb=16))
    model = Electra(gen, disc)
    assert model.rtd_weight == 50.0
    assert gen.encoder.embeddings.word is disc.embeddings.word
    assert gen.encoder.embeddings.position is disc.embeddings.position
    assert gen.head.decoder.weight is disc.embeddings.word.weight
    ids = torch.randint(5, 40, (3, 10))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, 2:5] = ids[:, 2:5]
    masked = ids.clone()
    masked[:, 2:5] = 1
    att = torch.ones_like(ids)
    att[2, 8:] = 0
    g = torch.Generator().manual_seed(0)
    out = model(masked, labels, att, generator=g)
    # recompute both terms with the same sampling draw
    gen_logits = gen(masked, att)
    corrupted, replaced = replace_with_samples(masked, gen_logits, labels, generator=torch.Generator().manual_seed(0))
    d_logits = model.head(disc(corrupted, att))
    torch.testing.assert_close(out.mlm_loss, mlm_loss(gen_logits, labels))
    torch.testing.assert_close(out.rtd_loss, rtd_loss(d_logits, replaced, att))
    torch.testing.assert_close(out.loss, out.mlm_loss + 50.0 * out.rtd_loss)
    real = att.bool()
    assert out.replaced_fraction == pytest.approx(float(replaced[real].float().mean()))
    assert out.rtd_accuracy == pytest.approx(float(((d_logits > 0) == replaced)[real].float().mean()))

    # the RTD term alone sends no gradient into the generator's own layers (sampling is not differentiated)
    model.zero_grad()
    out.rtd_loss.backward()
    gen_only = [p for n, p in gen.named_parameters() if "encoder.encoder" in n or n.startswith("head.transform")]
    assert gen_only and all(p.grad is None or p.grad.abs().sum() == 0 for p in gen_only)
    assert disc.embeddings.word.weight.grad.abs().sum() > 0


def test_share_embeddings_rejects_mismatched_width():
    gen = MaskedLanguageModel(BertModel(_tiny(hidden=8, emb=8)))
    with pytest.raises(ValueError, match="embedding_size"):
        Electra(gen, BertModel(_tiny(hidden=16, emb=16)))
