"""T5 span corruption: the paper's example, an independent rebuild of inputs/targets, the noise
density and mean span length, and the span-length distribution of a uniform random composition."""
from __future__ import annotations

import itertools
import math
import random

import pytest
import torch
from scipy import stats

from encoderkit.objectives.span import (
    SpanCorruptionConfig,
    random_spans_noise_mask,
    span_corrupt,
    span_corrupt_batch,
)


def test_paper_example():
    words = "Thank you for inviting me to your party last week .".split()
    vocab = {w: i + 10 for i, w in enumerate(words)}
    noise = torch.tensor([w in ("for", "inviting", "last") for w in words])
    cfg = SpanCorruptionConfig(sentinel_start=100, sentinel_step=-1, eos_id=1)
    inputs, targets = span_corrupt([vocab[w] for w in words], cfg, noise_mask=noise)
    inv = {v: k for k, v in vocab.items()} | {100: "<X>", 99: "<Y>", 98: "<Z>", 1: "</s>"}
    assert " ".join(inv[i] for i in inputs) == "Thank you <X> me to your party <Y> week . </s>"
    assert " ".join(inv[i] for i in targets) == "<X> for inviting <Y> last <Z> </s>"


def _rebuild(tokens, noise, sentinel):
    """Independent re-computation with itertools.groupby over runs."""
    inp, tgt, k_in, k_tgt = [], [], 0, 0
    for is_noise, run in itertools.groupby(zip(tokens, noise), key=lambda p: p[1]):
        run = [t for t, _ in run]
        if is_noise:
            inp.append(sentinel(k_in)); k_in += 1
            tgt.extend(run)
        else:
            inp.extend(run)
            tgt.append(sentinel(k_tgt)); k_tgt += 1
    return inp, tgt


def test_inputs_targets_match_independent_rebuild_and_batch_pads():
    g = torch.Generator().manual_seed(0)
    cfg = SpanCorruptionConfig(sentinel_start=32099, eos_id=None)
    for L in (2, 3, 7, 20, 57, 200):
        toks = list(range(1000, 1000 + L))
        noise = random_spans_noise_mask(L, generator=g)
        inp, tgt = span_corrupt(toks, cfg, noise_mask=noise)
        e_inp, e_tgt = _rebuild(toks, noise.tolist(), lambda k: 32099 - k)
        assert inp == e_inp and tgt == e_tgt
        assert not noise[0], "T5 layout starts with a non-noise gap"
    batch = span_corrupt_batch([list(range(5, 30)), list(range(5, 60))], SpanCorruptionConfig(), g)
    assert batch["input_ids"].shape[0] == 2 and batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()
    assert (batch["labels"] == -100).any() and int(batch["input_ids"][0, batch["attention_mask"][0].sum() - 1]) == 1
    with pytest.raises(ValueError, match="at least 2 tokens"):
        random_spans_noise_mask(1)
    with pytest.raises(ValueError, match="empty"):
        span_corrupt_batch([])


def _runs(mask):
    return [len(list(r)) for v, r in itertools.groupby(mask.tolist()) if v]


def test_density_and_mean_span_length_over_many_sequences():
    g = torch.Generator().manual_seed(1)
    rng = random.Random(1)
    noise_total = token_total = 0
    spans: list[int] = []
    for _ in range(2000):
        L = rng.randint(30, 512)
        m = random_spans_noise_mask(L, 0.15, 3.0, generator=g)
        noise_total += int(m.sum())
        token_total += L
        spans.extend(_runs(m))
    assert noise_total / token_total == pytest.approx(0.15, abs=0.002)
    assert sum(spans) / len(spans) == pytest.approx(3.0, abs=0.05)
    # other settings follow their parameters too
    m = random_spans_noise_mask(1000, 0.3, 8.0, generator=g)
    assert int(m.sum()) == 300 and len(_runs(m)) == round(300 / 8)


def test_span_lengths_follow_a_uniform_random_composition():
    """n noise tokens in k spans, uniform over compositions: P(span = j) = C(n-j-1, k-2) / C(n-1, k-1).
    L = 100 -> n = 15, k = 5; chi-square of the observed lengths of every span against that law."""
    g = torch.Generator().manual_seed(2)
    n, k = 15, 5
    counts = [0] * (n - k + 2)
    for _ in range(3000):
        runs = _runs(random_spans_noise_mask(100, generator=g))
        assert len(runs) == k and sum(runs) == n
        for r in runs:
            counts[r] += 1
    p = [0.0] + [math.comb(n - j - 1, k - 2) / math.comb(n - 1, k - 1) for j in range(1, n - k + 2)]
    assert sum(p) == pytest.approx(1.0)
    # pool the tail (j >= 6) so every expected count is large
    obs = counts[1:6] + [sum(counts[6:])]
    exp = [x * sum(counts) for x in p[1:6] + [sum(p[6:])]]
    assert stats.chisquare(obs, exp).pvalue > 1e-3, (obs, exp)
