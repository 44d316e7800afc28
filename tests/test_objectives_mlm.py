"""MLM corruption: the 15% / 80-10-10 proportions (statistical bounds), special tokens, whole-word
masking, and the loss against a direct re-computation."""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from encoderkit.objectives.mlm import (
    IGNORE_INDEX,
    MaskedLanguageModel,
    MaskingConfig,
    MLMHead,
    mask_tokens,
    masked_accuracy,
    mlm_loss,
    special_tokens_mask,
    word_ids_from_continuation,
)

V, MASK, CLS, SEP, PAD = 1000, 3, 1, 2, 0
SPECIAL = [PAD, CLS, SEP, MASK]


def _batch(B: int = 400, T: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, V, (B, T), generator=g)
    ids[:, 0] = CLS
    lengths = torch.randint(T // 2, T, (B,), generator=g)
    att = (torch.arange(T)[None, :] < lengths[:, None]).long()
    ids[torch.arange(B), lengths - 1] = SEP
    ids = ids.masked_fill(att == 0, PAD)
    return ids, att


def test_selection_and_80_10_10_proportions_within_statistical_bounds():
    ids, att = _batch()
    special = special_tokens_mask(ids, SPECIAL, att)
    corrupted, labels = mask_tokens(ids, mask_token_id=MASK, vocab_size=V, special_mask=special,
                                    generator=torch.Generator().manual_seed(1))
    n_eligible = int((~special).sum())
    selected = labels != IGNORE_INDEX
    n_sel = int(selected.sum())
    # selection ~ Binomial(n_eligible, 0.15): two-sided p-value must not be tiny
    p_sel = stats.binomtest(n_sel, n_eligible, 0.15).pvalue
    assert p_sel > 1e-3, (n_sel / n_eligible, p_sel)
    assert abs(n_sel / n_eligible - 0.15) < 0.005

    # of the selected: [MASK] 0.8 (+ random draw of MASK), unchanged 0.1 (+ random draw of itself), other random
    c, o = corrupted[selected], ids[selected]
    is_mask = c == MASK
    unchanged = (c == o) & ~is_mask
    other = ~is_mask & ~unchanged
    observed = [int(is_mask.sum()), int(unchanged.sum()), int(other.sum())]
    expected_p = [0.8 + 0.1 / V, 0.1 + 0.1 / V, 0.1 * (1 - 2 / V)]
    chi = stats.chisquare(observed, [p * n_sel for p in expected_p])
    assert chi.pvalue > 1e-3, (observed, chi)

    # random replacements are uniform over the vocabulary (chi-square over 10 buckets of 100 ids)
    rnd = c[other]
    counts = torch.bincount(rnd // 100, minlength=10).tolist()
    assert stats.chisquare(counts).pvalue > 1e-3, counts

    # nothing outside the selection changed; labels hold the original token exactly at the selection
    assert torch.equal(corrupted[~selected], ids[~selected])
    assert torch.equal(labels[selected], ids[selected])
    assert not bool((selected & special).any())


def test_seeded_and_config_validated():
    ids, att = _batch(8, 32)
    special = special_tokens_mask(ids, SPECIAL, att)
    a = mask_tokens(ids, mask_token_id=MASK, vocab_size=V, special_mask=special, generator=torch.Generator().manual_seed(5))
    b = mask_tokens(ids, mask_token_id=MASK, vocab_size=V, special_mask=special, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="mlm_probability"):
        MaskingConfig(mlm_probability=1.5)
    with pytest.raises(ValueError, match="sum to at most 1"):
        MaskingConfig(mask_ratio=0.9, random_ratio=0.2)
    with pytest.raises(ValueError, match="batch, seq_len"):
        mask_tokens(ids[0], mask_token_id=MASK, vocab_size=V, special_mask=special[0])


def test_whole_word_masking_selects_whole_words_at_the_word_rate():
    g = torch.Generator().manual_seed(3)
    B, T = 300, 128
    ids = torch.randint(10, V, (B, T), generator=g)
    ids[:, 0], ids[:, -1] = CLS, SEP
    is_cont = torch.rand(B, T, generator=g) < 0.4  # ~40% of pieces continue the previous word
    is_cont[:, :2] = False
    special = special_tokens_mask(ids, SPECIAL)
    word_ids = word_ids_from_continuation(is_cont, special)
    # independent word numbering: walk each row
    for b in range(3):
        w, expect = -1, []
        for t in range(T):
            if special[b, t]:
                expect.append(-1)
                continue
            if not is_cont[b, t]:
                w += 1
            expect.append(w)
        assert word_ids[b].tolist() == expect
    _, labels = mask_tokens(ids, mask_token_id=MASK, vocab_size=V, special_mask=special,
                            config=MaskingConfig(whole_word=True), word_ids=word_ids, generator=g)
    sel = labels != IGNORE_INDEX
    n_words = n_sel_words = 0
    for b in range(B):
        for w in range(int(word_ids[b].max()) + 1):
            s = sel[b][word_ids[b] == w]
            assert bool(s.all()) or not bool(s.any()), "a word was partly selected"
            n_words += 1
            n_sel_words += int(s[0])
    assert stats.binomtest(n_sel_words, n_words, 0.15).pvalue > 1e-3, n_sel_words / n_words
    with pytest.raises(ValueError, match="word_ids"):
        mask_tokens(ids, mask_token_id=MASK, vocab_size=V, special_mask=special, config=MaskingConfig(whole_word=True))


def test_mlm_loss_and_accuracy_match_direct_computation():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, dtype=torch.float64)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 1], labels[1, 3], labels[1, 4] = 4, 0, int(logits[1, 4].argmax())
    total, n = 0.0, 0
    for b in range(2):
        for t in range(5):
            y = int(labels[b, t])
            if y == IGNORE_INDEX:
                continue
            row = logits[b, t].tolist()
            total += -(row[y] - math.log(sum(math.exp(v) for v in row)))
            n += 1
    assert mlm_loss(logits, labels).item() == pytest.approx(total / n, rel=1e-12)
    hits = [int(logits[b, t].argmax()) == int(labels[b, t]) for b, t in [(0, 1), (1, 3), (1, 4)]]
    assert masked_accuracy(logits, labels) == pytest.approx(sum(hits) / 3)
    none = torch.full((2, 5), IGNORE_INDEX)
    assert mlm_loss(logits.requires_grad_(), none).item() == 0.0


def test_mlm_head_is_tied_to_the_token_embedding():
    from encoderkit.models.bert import BertConfig, BertModel

    cfg = BertConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                     max_position_embeddings=16, dropout=0.0, attention_dropout=0.0)
    model = MaskedLanguageModel(BertModel(cfg))
    assert model.head.decoder.weight is model.encoder.embeddings.word.weight
    ids = torch.randint(0, 50, (2, 6))
    h = model.encoder(ids)
    x = model.head.norm(torch.nn.functional.gelu(model.head.transform(h)))
    expect = x @ model.encoder.embeddings.word.weight.T + model.head.decoder.bias
    torch.testing.assert_close(model(ids), expect)
    with pytest.raises(ValueError, match="cannot tie"):
        MLMHead(16, 50, embedding_size=8, tied_embedding=torch.nn.Embedding(50, 16))


def test_masked_logits_equal_the_full_logits_at_selected_positions_and_bert_init():
    from encoderkit.models.bert import BertConfig, BertModel
    from encoderkit.objectives.mlm import init_bert_weights

    cfg = BertConfig(vocab_size=60, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                     max_position_embeddings=16, dropout=0.0, attention_dropout=0.0)
    model = init_bert_weights(MaskedLanguageModel(BertModel(cfg)))
    w = model.encoder.embeddings.word.weight
    assert abs(w.std().item() - 0.02) < 0.003 and model.head.decoder.weight is w
    ids = torch.randint(4, 60, (3, 8))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 2], labels[2, 5] = ids[0, 2], ids[2, 5]
    rows, targets = model.masked_logits(ids, None, labels)
    full = model(ids)
    torch.testing.assert_close(rows, torch.stack([full[0, 2], full[2, 5]]))
    assert targets.tolist() == [int(ids[0, 2]), int(ids[2, 5])]
    # small init keeps the first loss near log V (N(0, 1) embeddings start far above it)
    assert abs(mlm_loss(rows, targets).item() - math.log(60)) < 1.0
