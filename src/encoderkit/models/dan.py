"""Deep averaging network (Iyyer et al. 2015), the sentence encoder of the Universal Sentence Encoder's DAN
variant (Cer et al. 2018):

    a = (1/|S'|) sum_{w in S'} E[w]          S' = the sentence's tokens; in training each token is dropped
                                              with probability p (word dropout), keeping at least one
    h_0 = a,   h_l = tanh(W_l h_{l-1} + b_l)  l = 1..L
    z = W_out h_L                             the sentence vector

Tokens are WordPiece pieces of the all-MiniLM-L6-v2 tokenizer (shipped with the default model's package):
no vocabulary to build, and a word never seen in training still maps to pieces that were. [CLS] / [SEP] /
padding are left out of the average. Training, the Encoder and the run folder are in train/recipes/dan.py."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class DANConfig:
    vocab_size: int = 30522  # rows of the embedding table (the tokenizer's vocabulary)
    embed_dim: int = 300  # word (piece) embedding size
    hidden_size: int = 512  # width of the feed-forward layers
    num_layers: int = 2  # feed-forward layers after the average
    out_dim: int = 512  # sentence vector size
    word_dropout: float = 0.3  # probability of dropping each token from the average while training
    pad_id: int = 0  # padding id
    special_ids: tuple = (0, 100, 101, 102, 103)  # ids never averaged: [PAD] [UNK] [CLS] [SEP] [MASK]
    model_type: str = "dan"


class DAN(nn.Module):
    """Embedding table -> masked average (with word dropout in training) -> tanh MLP -> linear projection."""

    def __init__(self, config: DANConfig):
        super().__init__()
        if not 0 <= config.word_dropout < 1:
            raise ValueError(f"word_dropout must be in [0, 1), got {config.word_dropout}")
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=c.pad_id)
        nn.init.normal_(self.embed.weight, std=0.1)
        layers, d = [], c.embed_dim
        for _ in range(c.num_layers):
            layers += [nn.Linear(d, c.hidden_size), nn.Tanh()]
            d = c.hidden_size
        self.ff = nn.Sequential(*layers)
        self.out = nn.Linear(d, c.out_dim)
        self.register_buffer("special", torch.tensor(sorted(set(c.special_ids)), dtype=torch.long), persistent=False)

    def token_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T) float mask of the tokens that enter the average (word dropout applied in training)."""
        keep = ~torch.isin(input_ids, self.special)
        if attention_mask is not None:
            keep &= attention_mask.bool()
        if self.training and self.config.word_dropout > 0:
            dropped = keep & (torch.rand(keep.shape, device=keep.device) >= self.config.word_dropout)
            # a sentence whose every token was dropped keeps them all (an empty average is undefined)
            keep = torch.where(dropped.any(1, keepdim=True), dropped, keep)
        return keep.float()

    def average(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mask-aware mean of the token embeddings (B, E); a sentence with no real token gives zeros."""
        m = self.token_mask(input_ids, attention_mask)  # (B, T)
        e = self.embed(input_ids)  # (B, T, E)
        return (e * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1.0)  # (B, E)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Sentence vectors (B, out_dim). token_type_ids is accepted (Encoder passes it) and unused."""
        return self.out(self.ff(self.average(input_ids, attention_mask)))
