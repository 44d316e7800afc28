"""The T5 encoder (Raffel et al., 2020), as sentence-T5 / GTR embed with it; mT5 and UMT5 are config options.

    x_0 = E[ids]                                              shared token embedding, no absolute positions
    b   = B[bucket(j - i)]                                    learned relative position bias per head (B, heads, T, T)
    h   = x + Attn(RMSNorm(x); b)                             attention logits q.k + b, NOT scaled by 1/sqrt(d_k)
    x'  = h + FFN(RMSNorm(h))                                 FFN: relu(x W_i) W_o (T5) or GeGLU (T5 v1.1, mT5)
    out = RMSNorm(x_L)                                        final norm

One bias table (in the first layer of the checkpoint) is shared by all layers; UMT5 gives every layer its own.
No biases anywhere, no mean subtraction in the norms; dropout is for training only."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from encoderkit.nn import FeedForward, GatedFeedForward, MultiHeadSelfAttention, RelativePositionBias, RMSNorm
from encoderkit.nn.attention import attention_bias


@dataclass
class T5Config:
    vocab_size: int = 32128  # number of token ids (shared input embedding)
    hidden_size: int = 512  # d_model, width of every layer
    num_layers: int = 6  # encoder blocks (the decoder is not built)
    num_heads: int = 8  # attention heads per layer
    head_dim: int = 64  # d_kv; heads * d_kv need not equal d_model (t5-3b, t5-11b)
    intermediate_size: int = 2048  # d_ff, width of the feed-forward block
    feed_forward_proj: str = "relu"  # "relu" / "gelu" (one matrix) or "gated-gelu" / "gated-silu" (GeGLU / SwiGLU)
    relative_attention_num_buckets: int = 32  # buckets of (key - query) offsets, half per direction
    relative_attention_max_distance: int = 128  # offsets at or beyond this share the last bucket
    per_layer_position_bias: bool = False  # UMT5: every layer has its own bias table (T5/mT5: layer 0's is shared)
    layer_norm_eps: float = 1e-6  # RMSNorm epsilon
    dropout: float = 0.1  # dropout_rate (training only)
    max_position_embeddings: int = 512  # nominal input limit (n_positions); relative positions have no table
    pad_token_id: int = 0  # padding id (<pad> = 0 in T5 vocabularies)
    model_type: str = "t5"  # "t5", "mt5" or "umt5" in Hugging Face configs
    extra: dict = field(default_factory=dict)  # config fields kept for writing the checkpoint back

    def __post_init__(self) -> None:
        parts = self.feed_forward_proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise ValueError(f"feed_forward_proj must be 'ACT' or 'gated-ACT' (e.g. relu, gated-gelu), "
                             f"got {self.feed_forward_proj!r}")

    @property
    def gated(self) -> bool:
        """Two input matrices, act(x W_i0) * (x W_i1) (T5 v1.1, mT5, UMT5)."""
        return self.feed_forward_proj.startswith("gated-")

    @property
    def act(self) -> str:
        """The feed-forward activation; "gated-gelu" means the tanh-approximated GELU (gelu_new) in T5 v1.1."""
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else self.feed_forward_proj.split("-")[-1]


class T5Block(nn.Module):
    """Pre-norm block: h = x + Attn(RMSNorm(x); bias); out = h + FFN(RMSNorm(h))."""

    def __init__(self, cfg: T5Config):
        super().__init__()
        H, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.ln1 = RMSNorm(H, eps)
        self.attn = MultiHeadSelfAttention(H, cfg.num_heads, bias=False, head_dim=cfg.head_dim, scale=1.0)
        self.ln2 = RMSNorm(H, eps)
        ffn = GatedFeedForward if cfg.gated else FeedForward
        self.ffn = ffn(H, cfg.intermediate_size, act=cfg.act, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), bias))
        return x + self.drop(self.ffn(self.ln2(x)))


class T5EncoderModel(nn.Module):
    """Token embedding + T5 blocks sharing a relative position bias + final RMSNorm -> last hidden states."""

    def __init__(self, cfg: T5Config):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        n_tables = cfg.num_layers if cfg.per_layer_position_bias else 1
        self.position_bias = nn.ModuleList(
            RelativePositionBias(cfg.num_heads, cfg.relative_attention_num_buckets,
                                 cfg.relative_attention_max_distance, bidirectional=True)
            for _ in range(n_tables))
        self.layers = nn.ModuleList(T5Block(cfg) for _ in range(cfg.num_layers))
        self.final_norm = RMSNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> last hidden states (B, T, H); attention_mask 1 = token, 0 = padding.
        token_type_ids are accepted and ignored (T5 has no segments)."""
        x = self.drop(self.embed(input_ids))  # (B, T, H)
        T = x.shape[1]
        padding = attention_bias(attention_mask, x.dtype, T)  # (B, 1, 1, T) or None
        per_layer = self.config.per_layer_position_bias
        for i, layer in enumerate(self.layers):
            if i == 0 or per_layer:  # T5 / mT5: the first table's bias serves every layer
                bias = self.position_bias[i if per_layer else 0](T, T).to(x.dtype)  # (1, heads, T, T)
                if padding is not None:
                    bias = bias + padding  # (B, heads, T, T)
            x = layer(x, bias)
        return self.drop(self.final_norm(x))
