"""Masked language modelling (BERT, Devlin et al. 2019, section 3.1).

Of the non-special tokens, a fraction p = 0.15 is selected; a selected token is replaced by
[MASK] with probability 0.8, by a uniformly random token with probability 0.1, and kept unchanged
with probability 0.1. The model predicts the original token at every selected position:

    L_MLM = - (1 / |S|) sum_{i in S} log p_theta(x_i | x_tilde)

where S is the set of selected positions; all other labels are -100 (ignored by cross-entropy).
Whole-word masking selects whole words (all of a word's word pieces together)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from encoderkit.nn import activation

IGNORE_INDEX = -100


@dataclass
class MaskingConfig:
    mlm_probability: float = 0.15  # fraction of non-special tokens (or words) selected for prediction
    mask_ratio: float = 0.8  # of the selected: replaced by [MASK]
    random_ratio: float = 0.1  # of the selected: replaced by a random token (the rest stay unchanged)
    whole_word: bool = False  # select whole words (needs word_ids)

    def __post_init__(self) -> None:
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.mask_ratio < 0 or self.random_ratio < 0 or self.mask_ratio + self.random_ratio > 1.0 + 1e-9:
            raise ValueError(f"mask_ratio ({self.mask_ratio}) and random_ratio ({self.random_ratio}) must be >= 0 "
                             "and sum to at most 1")


def _gen_device(generator: torch.Generator | None, default: torch.device) -> torch.device:
    return generator.device if generator is not None else default


def special_tokens_mask(input_ids: torch.Tensor, special_ids: list[int] | set[int] | torch.Tensor,
                        attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T) bool: True where the token is special ([CLS], [SEP], [PAD], ...) or padding."""
    special = torch.as_tensor(list(special_ids) if not torch.is_tensor(special_ids) else special_ids,
                              dtype=input_ids.dtype, device=input_ids.device)
    out = torch.isin(input_ids, special)
    if attention_mask is not None:
        out = out | ~attention_mask.bool()
    return out


def word_ids_from_continuation(is_continuation: torch.Tensor, special: torch.Tensor) -> torch.Tensor:
    """Word index of every token, from a (B, T) bool mask of word-piece continuations ("##xx");
    -1 on special tokens. A word = one starting piece plus the continuations after it."""
    starts = (~is_continuation) & (~special)
    ids = torch.cumsum(starts.long(), dim=1) - 1  # (B, T)
    return ids.masked_fill(special, -1)


def mask_tokens(input_ids: torch.Tensor, *, mask_token_id: int, vocab_size: int, special_mask: torch.Tensor,
                config: MaskingConfig | None = None, word_ids: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's input corruption. Returns (corrupted_ids, labels): labels hold the original id at selected
    positions and -100 elsewhere. special_mask (B, T) marks tokens never selected; word_ids (B, T) gives
    each token's word index (-1 = none) for whole-word masking."""
    cfg = config or MaskingConfig()
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
    if special_mask.shape != input_ids.shape:
        raise ValueError(f"special_mask shape {tuple(special_mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
    dev = input_ids.device

    def uniform(shape) -> torch.Tensor:  # drawn on the generator's device, then moved
        return torch.rand(shape, generator=generator, device=_gen_device(generator, dev)).to(dev)

    if cfg.whole_word:
        if word_ids is None:
            raise ValueError("whole-word masking needs word_ids (B, T): each token's word index, -1 for none")
        n_words = int(word_ids.max().item()) + 1 if word_ids.numel() else 0
        pick = uniform((input_ids.shape[0], max(n_words, 1))) < cfg.mlm_probability  # (B, W)
        selected = torch.gather(pick, 1, word_ids.clamp(min=0)) & (word_ids >= 0)
    else:
        selected = uniform(input_ids.shape) < cfg.mlm_probability
    selected &= ~special_mask.bool()

    labels = input_ids.masked_fill(~selected, IGNORE_INDEX)
    u = uniform(input_ids.shape)  # one draw decides [MASK] / random / keep for each selected token
    to_mask = selected & (u < cfg.mask_ratio)
    to_random = selected & (u >= cfg.mask_ratio) & (u < cfg.mask_ratio + cfg.random_ratio)
    corrupted = input_ids.masked_fill(to_mask, mask_token_id)
    rnd = torch.randint(vocab_size, input_ids.shape, generator=generator, device=_gen_device(generator, dev),
                        dtype=input_ids.dtype).to(dev)
    corrupted = torch.where(to_random, rnd, corrupted)
    return corrupted, labels


@torch.no_grad()
def init_bert_weights(module: nn.Module, std: float = 0.02) -> nn.Module:
    """BERT's initialisation for training from scratch: Linear and Embedding weights ~ N(0, std^2), biases 0,
    LayerNorm gain 1 and bias 0 (PyTorch's N(0, 1) embeddings would make the tied MLM logits huge)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            m.weight.normal_(0.0, std)
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
        elif isinstance(m, nn.LayerNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()
    return module


class MLMHead(nn.Module):
    """BERT's prediction head: logits = LN(act(h W_t + b_t)) E^T + b, with E the (tied) token embedding."""

    def __init__(self, hidden_size: int, vocab_size: int, embedding_size: int | None = None, act: str = "gelu",
                 layer_norm_eps: float = 1e-12, tied_embedding: nn.Embedding | None = None):
        super().__init__()
        E = embedding_size or hidden_size
        self.transform = nn.Linear(hidden_size, E)
        self.act = activation(act)
        self.norm = nn.LayerNorm(E, eps=layer_norm_eps)
        self.decoder = nn.Linear(E, vocab_size)
        if tied_embedding is not None:
            if tied_embedding.weight.shape != self.decoder.weight.shape:
                raise ValueError(f"cannot tie the MLM decoder {tuple(self.decoder.weight.shape)} to an embedding of "
                                 f"shape {tuple(tied_embedding.weight.shape)}; pass embedding_size = the embedding width")
            self.decoder.weight = tied_embedding.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.transform(hidden))))  # (B, T, V)


class MaskedLanguageModel(nn.Module):
    """A BERT-family encoder plus a tied MLM head: forward(input_ids, attention_mask) -> logits (B, T, V)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        cfg = encoder.config
        self.encoder = encoder
        self.config = cfg
        self.head = MLMHead(cfg.hidden_size, cfg.vocab_size, cfg.emb_size, cfg.hidden_act, cfg.layer_norm_eps,
                            tied_embedding=encoder.embeddings.word)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.encoder(input_ids, attention_mask))

    def masked_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (n_masked, V) and targets (n_masked,) at the selected positions only: the V-way softmax
        is most of an MLM step's cost, and the other positions do not enter the loss."""
        sel = labels != IGNORE_INDEX
        return self.head(self.encoder(input_ids, attention_mask)[sel]), labels[sel]


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the selected positions (labels != -100); 0 (with grad) when none is selected."""
    if not bool((labels != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)


def masked_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of selected positions whose arg-max prediction is the original token (nan if none)."""
    sel = labels != IGNORE_INDEX
    n = int(sel.sum())
    if n == 0:
        return float("nan")
    return float((logits.argmax(-1)[sel] == labels[sel]).float().mean())
