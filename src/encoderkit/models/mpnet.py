"""MPNet (Song et al., 2020) as an encoder: a post-norm BERT whose attention logits also get a learned
relative position bias (T5-style buckets), computed once and shared by every layer:

    p_t = 1 + #{s <= t : ids_s != 1}   (p_t = 1 at padding)   RoBERTa-style positions (id 1 = <pad> is skipped)
    x   = LN(E_word[ids] + E_pos[p])                          embeddings; no token types
    r_ij = w[bucket(j - i)]                                   (heads,) per query i, key j: 32 buckets, bidirectional,
                                                              exact below 8, log-spaced up to 128 tokens
    A_l = softmax(Q_l K_l^T / sqrt(d_k) + r + mask) V_l       the same r in every layer l
    x_l = post-norm encoder layer(x_{l-1}, r + mask)          l = 1..L

and the model returns x_L, the last hidden states (B, T, H)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from encoderkit.nn import (EncoderLayer, EncoderStack, LearnedPositionalEmbedding, RelativePositionBias,
                          attention_mask_bias)

# MPNet derives positions from token id 1 (its <pad>) whatever config.json's pad_token_id says
POSITION_PADDING_ID = 1
# the reference buckets offsets into 32 buckets up to 128 tokens apart, whatever the config says
NUM_BUCKETS, MAX_DISTANCE = 32, 128


@dataclass
class MPNetConfig:
    vocab_size: int = 30527  # number of token ids
    hidden_size: int = 768  # H, width of every layer
    num_layers: int = 12  # L, encoder layers applied
    num_heads: int = 12  # attention heads per layer (d_k = H / heads)
    intermediate_size: int = 3072  # width of the feed-forward block
    hidden_act: str = "gelu"  # feed-forward activation
    max_position_embeddings: int = 514  # rows of the learned position table (positions start at 2)
    layer_norm_eps: float = 1e-5  # LayerNorm epsilon
    relative_attention_num_buckets: int = 32  # rows of the relative bias table (one scalar per head each)
    pad_token_id: int = 1  # padding id
    dropout: float = 0.1  # hidden dropout (training only)
    attention_dropout: float = 0.1  # attention-probability dropout (training only)
    model_type: str = "mpnet"  # the family name in Hugging Face configs
    extra: dict = field(default_factory=dict)  # config fields kept for writing the checkpoint back

    @property
    def roberta_positions(self) -> bool:
        """Positions start at pad + 1, so the longest input is max_position_embeddings - 2 (read by the loader)."""
        return True


class MPNetEmbeddings(nn.Module):
    """Token + position embeddings (positions counted over non-padding tokens), LayerNorm, dropout."""

    def __init__(self, cfg: MPNetConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position = LearnedPositionalEmbedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    @staticmethod
    def position_ids(input_ids: torch.Tensor) -> torch.Tensor:
        real = input_ids.ne(POSITION_PADDING_ID).long()  # (B, T)
        return torch.cumsum(real, dim=1) * real + POSITION_PADDING_ID  # (B, T); padding keeps position 1

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        if position_ids is None:
            position_ids = self.position_ids(input_ids)
        return self.drop(self.norm(self.word(input_ids) + self.position(position_ids)))  # (B, T, H)


class MPNetModel(nn.Module):
    """Embeddings + one shared relative position bias + a post-norm encoder stack; returns the last hidden states."""

    def __init__(self, cfg: MPNetConfig):
        super().__init__()
        if cfg.relative_attention_num_buckets != NUM_BUCKETS:
            raise ValueError(f"MPNet buckets relative positions into {NUM_BUCKETS}; "
                             f"relative_attention_num_buckets={cfg.relative_attention_num_buckets} is not supported")
        self.config = cfg
        self.embeddings = MPNetEmbeddings(cfg)
        self.relative_bias = RelativePositionBias(cfg.num_heads, NUM_BUCKETS, MAX_DISTANCE, bidirectional=True)
        layers = [EncoderLayer(cfg.hidden_size, cfg.num_heads, cfg.intermediate_size, act=cfg.hidden_act,
                               norm_first=False, ln_eps=cfg.layer_norm_eps, dropout=cfg.dropout,
                               attn_dropout=cfg.attention_dropout)
                  for _ in range(cfg.num_layers)]
        self.encoder = EncoderStack(layers)

    @property
    def layers(self) -> nn.ModuleList:
        """The encoder layers (for freezing the first N, inspection)."""
        return self.encoder.layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> last hidden states (B, T, H); attention_mask 1 = token, 0 = padding;
        token_type_ids is accepted and ignored (MPNet has no segments)."""
        x = self.embeddings(input_ids, position_ids)  # (B, T, H)
        T = x.shape[1]
        bias = self.relative_bias(T, T).to(x.dtype)  # (1, heads, T, T): r_ij, offsets j - i of token indices
        if attention_mask is not None and not bool(attention_mask.all()):
            bias = bias + attention_mask_bias(attention_mask, x.dtype)  # (B, heads, T, T)
        return self.encoder(x, bias)
