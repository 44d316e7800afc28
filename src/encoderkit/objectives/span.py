"""T5 span corruption (Raffel et al. 2020, section 3.1.4).

For a sequence of length L with noise density r = 0.15 and mean span length mu = 3:

    n_noise = round(L * r)  (clipped to [1, L - 1]),   n_spans = max(1, round(n_noise / mu))
    the noise tokens are split into n_spans non-empty spans, the others into n_spans non-empty gaps,
    each split uniformly at random over compositions, and they alternate gap, span, gap, span, ...

The input replaces each noise span with a distinct sentinel; the target lists, for each noise span,
its sentinel then its tokens, and closes with one more sentinel (T5's nonnoise-span sentinel):

    "Thank you <X> me to your party <Y> week ."   ->   "<X> for inviting <Y> last <Z>"

Sentinel k is `sentinel_start + k * sentinel_step` (T5: <extra_id_k> = vocab_size - 1 - k)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SpanCorruptionConfig:
    noise_density: float = 0.15  # fraction of tokens corrupted
    mean_span_length: float = 3.0  # mean length of a noise span
    sentinel_start: int = 32099  # id of the first sentinel (<extra_id_0> in T5's vocabulary)
    sentinel_step: int = -1  # T5 counts sentinels down from the end of the vocabulary
    eos_id: int | None = 1  # appended to inputs and targets (T5: </s> = 1); None = no EOS
    pad_id: int = 0  # padding for batched output

    def __post_init__(self) -> None:
        if not 0.0 < self.noise_density < 1.0:
            raise ValueError(f"noise_density must be in (0, 1), got {self.noise_density}")
        if self.mean_span_length < 1.0:
            raise ValueError(f"mean_span_length must be >= 1, got {self.mean_span_length}")


def _random_composition(total: int, parts: int, generator: torch.Generator | None) -> torch.Tensor:
    """Split `total` into `parts` positive integers, uniformly over all compositions: choose parts-1
    distinct cut points among the total-1 gaps between items."""
    cuts = torch.randperm(total - 1, generator=generator)[: parts - 1].sort().values + 1
    bounds = torch.cat([torch.zeros(1, dtype=torch.long), cuts, torch.tensor([total])])
    return bounds[1:] - bounds[:-1]


def random_spans_noise_mask(length: int, noise_density: float = 0.15, mean_span_length: float = 3.0,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """(length,) bool mask: True on noise tokens, laid out as T5 does (starts with a non-noise gap)."""
    if length < 2:
        raise ValueError(f"span corruption needs a sequence of at least 2 tokens, got {length}")
    n_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    n_spans = max(1, int(round(n_noise / mean_span_length)))
    n_spans = min(n_spans, n_noise, length - n_noise)
    noise_lengths = _random_composition(n_noise, n_spans, generator)
    gap_lengths = _random_composition(length - n_noise, n_spans, generator)
    mask = torch.zeros(length, dtype=torch.bool)
    pos = 0
    for gap, span in zip(gap_lengths.tolist(), noise_lengths.tolist()):
        pos += gap
        mask[pos:pos + span] = True
        pos += span
    return mask


def _spans_to_sentinels(tokens: list[int], drop: list[bool], cfg: SpanCorruptionConfig) -> list[int]:
    """Replace each maximal run of dropped tokens by the next sentinel; keep the other tokens."""
    out: list[int] = []
    k = 0
    for i, (t, d) in enumerate(zip(tokens, drop)):
        if d:
            if i == 0 or not drop[i - 1]:
                out.append(cfg.sentinel_start + k * cfg.sentinel_step)
                k += 1
        else:
            out.append(t)
    if cfg.eos_id is not None:
        out.append(cfg.eos_id)
    return out


def span_corrupt(tokens: list[int] | torch.Tensor, config: SpanCorruptionConfig | None = None,
                 generator: torch.Generator | None = None, noise_mask: torch.Tensor | None = None
                 ) -> tuple[list[int], list[int]]:
    """One sequence (no EOS) -> (inputs, targets) as T5 builds them: noise spans -> sentinels in the
    input; non-noise spans -> sentinels in the target."""
    cfg = config or SpanCorruptionConfig()
    toks = tokens.tolist() if torch.is_tensor(tokens) else list(tokens)
    if noise_mask is None:
        noise_mask = random_spans_noise_mask(len(toks), cfg.noise_density, cfg.mean_span_length, generator)
    noise = noise_mask.tolist()
    inputs = _spans_to_sentinels(toks, noise, cfg)
    targets = _spans_to_sentinels(toks, [not n for n in noise], cfg)
    return inputs, targets


def span_corrupt_batch(sequences: list[list[int]], config: SpanCorruptionConfig | None = None,
                       generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Corrupt each sequence and pad: input_ids, attention_mask, labels (padding in labels = -100)."""
    cfg = config or SpanCorruptionConfig()
    if not sequences:
        raise ValueError("span_corrupt_batch got an empty list of sequences")
    pairs = [span_corrupt(s, cfg, generator) for s in sequences]
    Ti = max(len(i) for i, _ in pairs)
    Tt = max(len(t) for _, t in pairs)
    input_ids = torch.full((len(pairs), Ti), cfg.pad_id, dtype=torch.long)
    attention = torch.zeros((len(pairs), Ti), dtype=torch.long)
    labels = torch.full((len(pairs), Tt), -100, dtype=torch.long)
    for b, (i, t) in enumerate(pairs):
        input_ids[b, : len(i)] = torch.tensor(i)
        attention[b, : len(i)] = 1
        labels[b, : len(t)] = torch.tensor(t)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
