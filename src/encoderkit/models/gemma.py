"""The Gemma text family as an encoder: Gemma 3 (google/embeddinggemma-300m: bidirectional attention) and the
causal Gemma 3 / 2 / 1 decoders used as embedders (e.g. BAAI/bge-multilingual-gemma2). A pre-norm stack with
RMSNorm scaled by (1 + g):

    x   = E[ids] * sqrt(H)                                   the scale is rounded to the weights' dtype first
    h   = x + N_post_attn(Attn_l(N_in(x)))                   Gemma 1: no N_post_attn
    x   = h + N_post_ffn(W_down (gelu_tanh(h' W_gate) * (h' W_up))),  h' = N_pre_ffn(h)   Gemma 1: no N_post_ffn
    Attn_l: grouped-query attention, RMSNorm on each head's q and k (Gemma 3), logits s scaled by
            query_pre_attn_scalar^-1/2 (Gemma 2: then soft-capped, c * tanh(s / c)); "sliding_attention" layers
            use rotary theta_local and a band window, "full_attention" layers rotary theta_global (and its
            scaling) over all keys
    out = N_final(x_L)                                       the last hidden states (B, T, H)

Attention is bidirectional (embeddinggemma: a local query sees keys |i - j| <= sliding_window // 2) or causal
(a local query sees keys i - sliding_window < j <= i)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from encoderkit.nn import GatedFeedForward, MultiHeadSelfAttention, RMSNorm, RotaryEmbedding, attention_bias
from encoderkit.nn.softcap import SoftcappedSelfAttention

GLOBAL, LOCAL = "full_attention", "sliding_attention"  # the layer kinds, as Hugging Face's layer_types name them


@dataclass
class GemmaConfig:
    vocab_size: int = 262_144  # number of token ids
    hidden_size: int = 768  # H, width of the residual stream
    num_layers: int = 24  # L, transformer layers
    num_heads: int = 3  # query heads per layer
    num_kv_heads: int = 1  # key/value heads (grouped-query attention: each serves num_heads / num_kv_heads queries)
    head_dim: int = 256  # d_k, width of one head (not H / heads in Gemma)
    intermediate_size: int = 1152  # d_ff, width of each GeGLU half
    hidden_act: str = "gelu_pytorch_tanh"  # activation on the gate half of the feed-forward
    max_position_embeddings: int = 2048  # longest input the model was trained for (rotary: no table)
    rms_norm_eps: float = 1e-6  # RMSNorm epsilon
    attention_bias: bool = False  # q, k, v and o projections have biases
    query_pre_attn_scalar: float = 256.0  # attention logits are scaled by query_pre_attn_scalar^-1/2
    layer_types: list[str] = field(default_factory=list)  # per layer: "full_attention" or "sliding_attention"
    sliding_window: int | None = 512  # window of local layers, as config.json states it (see `window`)
    rope_theta: float = 1_000_000.0  # rotary base of full-attention layers
    rope_scaling: float = 1.0  # linear position interpolation of full-attention layers (Gemma 3 4B+: 8)
    rope_local_theta: float = 10_000.0  # rotary base of sliding-window layers
    bidirectional: bool = True  # every query sees later keys too (embeddinggemma); False: causal decoder
    qk_norm: bool = True  # RMSNorm on each head's q and k (Gemma 3)
    attn_logit_softcapping: float | None = None  # Gemma 2: logits -> c * tanh(logits / c) before the softmax
    sandwich_norms: bool = True  # norms after attention and around the feed-forward too (Gemma 2 / 3)
    pad_token_id: int = 0  # padding id
    attention_dropout: float = 0.0  # dropout on attention probabilities (training only)
    model_type: str = "gemma3_text"  # the family name in Hugging Face configs
    extra: dict = field(default_factory=dict)  # config fields kept for writing the checkpoint back

    def __post_init__(self) -> None:
        if not self.layer_types:  # Gemma 3's pattern: five sliding layers, then one full layer
            self.layer_types = [GLOBAL if (i + 1) % 6 == 0 else LOCAL for i in range(self.num_layers)]
        if len(self.layer_types) != self.num_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers")
        unknown = set(self.layer_types) - {GLOBAL, LOCAL}
        if unknown:
            raise ValueError(f"unknown layer types {sorted(unknown)}; use {GLOBAL!r} or {LOCAL!r}")
        if LOCAL in self.layer_types and not self.sliding_window:
            raise ValueError("sliding_attention layers need a sliding_window")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")

    @property
    def window(self) -> tuple[int, int]:
        """(left, right): how far a query of a sliding layer sees before and after itself."""
        w = int(self.sliding_window or 0)
        return (w // 2, w // 2) if self.bidirectional else (w - 1, 0)


def gemma_norm(cfg: GemmaConfig):
    """Gemma's RMSNorm: weights stored around zero, applied as (1 + g)."""
    return lambda d: RMSNorm(d, eps=cfg.rms_norm_eps, offset=1.0)


class GemmaEmbedding(nn.Embedding):
    """Token embeddings multiplied by sqrt(H); the scale is a float32 number cast to the weights' dtype
    (in bf16, sqrt(3072) = 55.43 becomes 55.5), as the reference does."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        scale = torch.tensor(math.sqrt(self.embedding_dim), dtype=torch.float32).to(self.weight.dtype)
        return super().forward(input_ids) * scale  # (B, T, H)


class GemmaLayer(nn.Module):
    """Pre-norm layer with Gemma's extra norms on the outputs of attention and feed-forward."""

    def __init__(self, cfg: GemmaConfig, index: int, rotary: RotaryEmbedding):
        super().__init__()
        H, norm = cfg.hidden_size, gemma_norm(cfg)
        self.kind = cfg.layer_types[index]
        self.attn_norm = norm(H)
        opts = dict(dropout=cfg.attention_dropout, bias=cfg.attention_bias, rotary=rotary,
                    n_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, qk_norm=norm if cfg.qk_norm else None,
                    scale=cfg.query_pre_attn_scalar ** -0.5)
        self.attn = (SoftcappedSelfAttention(H, cfg.num_heads, softcap=cfg.attn_logit_softcapping, **opts)
                     if cfg.attn_logit_softcapping else MultiHeadSelfAttention(H, cfg.num_heads, **opts))
        self.post_attn_norm = norm(H) if cfg.sandwich_norms else nn.Identity()
        self.ffn_norm = norm(H)
        self.ffn = GatedFeedForward(H, cfg.intermediate_size, act=cfg.hidden_act, bias=False)
        self.post_ffn_norm = norm(H) if cfg.sandwich_norms else nn.Identity()

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, position_ids: torch.Tensor) -> torch.Tensor:
        h = x + self.post_attn_norm(self.attn(self.attn_norm(x), bias, position_ids))
        return h + self.post_ffn_norm(self.ffn(self.ffn_norm(h)))


class GemmaModel(nn.Module):
    """Scaled embeddings + Gemma layers (local / global) + a final RMSNorm; forward returns the last hidden states."""

    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        self.config = cfg
        self.embed = GemmaEmbedding(cfg.vocab_size, cfg.hidden_size)
        # one rotary module (no weights) per layer kind, shared by the layers of that kind
        rotary = {GLOBAL: RotaryEmbedding(cfg.head_dim, base=cfg.rope_theta, scaling=cfg.rope_scaling),
                  LOCAL: RotaryEmbedding(cfg.head_dim, base=cfg.rope_local_theta)}
        self.layers = nn.ModuleList(GemmaLayer(cfg, i, rotary[kind]) for i, kind in enumerate(cfg.layer_types))
        self.norm = gemma_norm(cfg)(cfg.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> last hidden states (B, T, H); attention_mask 1 = token, 0 = padding.
        token_type_ids is accepted and ignored (Gemma has no segments)."""
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)  # (B, T)
        x = self.embed(input_ids)  # (B, T, H)
        causal = not self.config.bidirectional
        biases = {GLOBAL: attention_bias(attention_mask, x.dtype, T, causal=causal, device=x.device)}
        if LOCAL in self.config.layer_types:
            biases[LOCAL] = attention_bias(attention_mask, x.dtype, T, causal=causal, window=self.config.window,
                                           device=x.device)
        for layer in self.layers:
            x = layer(x, biases[layer.kind], position_ids)
        return self.norm(x)
