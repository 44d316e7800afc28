"""Decoder-only language models used as text embedders: Llama, Mistral (intfloat/e5-mistral-7b-instruct),
Qwen2 (Alibaba-NLP/gte-Qwen2-*) and Qwen3 (Qwen/Qwen3-Embedding-*). One pre-norm stack; the families differ
only in config fields:

    x   = E[ids]                                             token embeddings, no position table
    h   = x + Attn_l(N_attn(x))                              N = RMSNorm
    x   = h + W_down (silu(h' W_gate) * (h' W_up)),  h' = N_ffn(h)        SwiGLU feed-forward
    Attn_l: grouped-query attention (num_kv_heads K/V heads); q, k rotated by half-split RoPE (theta from
            the config; Llama 3.1: frequency bands rescaled); Qwen2: biases on q, k, v (none on o); Qwen3:
            RMSNorm on each head's q and k before the rotation; queries see keys j <= i (causal), or every
            key (is_causal = false: gte-Qwen2); on "sliding_attention" layers only keys
            i - sliding_window < j <= i (Mistral; bidirectional: |i - j| <= sliding_window)
    out = N_final(x_L)                                       the last hidden states (B, T, H)

Embedders pool the last real token: with causal attention only it has seen the whole text."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from encoderkit.nn import GatedFeedForward, MultiHeadSelfAttention, RMSNorm, RotaryEmbedding, attention_bias
from encoderkit.nn.rope_scaling import llama3_frequencies

FULL, SLIDING = "full_attention", "sliding_attention"  # the layer kinds, as Hugging Face's layer_types name them


@dataclass
class DecoderConfig:
    vocab_size: int = 32_000  # number of token ids
    hidden_size: int = 4096  # H, width of the residual stream
    num_layers: int = 32  # L, transformer layers
    num_heads: int = 32  # query heads per layer
    num_kv_heads: int | None = None  # key/value heads (grouped-query attention); None = num_heads
    head_dim: int | None = None  # d_k, width of one head; None = H / num_heads (Qwen3 sets it: 128)
    intermediate_size: int = 11_008  # d_ff, width of each SwiGLU half
    hidden_act: str = "silu"  # activation on the gate half of the feed-forward
    max_position_embeddings: int = 4096  # longest input the model was trained for (rotary: no table)
    rms_norm_eps: float = 1e-6  # RMSNorm epsilon
    rope_theta: float = 10_000.0  # rotary base theta
    rope_type: str = "default"  # "default"; "linear": angles of pos / rope_scaling; "llama3": Llama 3.1 bands
    rope_scaling: float = 1.0  # the rope_type's factor (linear interpolation, or llama3's low-frequency divisor)
    rope_low_freq_factor: float = 1.0  # llama3: wavelengths above original / low_freq_factor are fully scaled
    rope_high_freq_factor: float = 4.0  # llama3: wavelengths below original / high_freq_factor are kept
    rope_original_max_positions: int = 8192  # llama3: the context length of pre-training
    attention_bias: bool = False  # biases on the q, k, v projections (Qwen2: True)
    o_bias: bool = False  # bias on the output projection (Llama with attention_bias: True; Qwen2: False)
    mlp_bias: bool = False  # biases in the feed-forward (Llama's mlp_bias)
    qk_norm: bool = False  # RMSNorm on each head's q and k before rotary (Qwen3)
    causal: bool = True  # queries see only earlier keys; False: bidirectional (config is_causal = false)
    sliding_window: int | None = None  # keys a "sliding_attention" layer's query sees, itself included
    layer_types: list[str] = field(default_factory=list)  # per layer: "full_attention" or "sliding_attention"
    pad_token_id: int = 0  # padding id
    attention_dropout: float = 0.0  # dropout on attention probabilities (training only)
    model_type: str = "llama"  # the family name in Hugging Face configs: llama | mistral | qwen2 | qwen3
    extra: dict = field(default_factory=dict)  # config fields kept for writing the checkpoint back

    def __post_init__(self) -> None:
        self.num_kv_heads = self.num_kv_heads or self.num_heads
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; "
                                 "give head_dim")
            self.head_dim = self.hidden_size // self.num_heads
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        if not self.layer_types:
            self.layer_types = [SLIDING if self.sliding_window else FULL] * self.num_layers
        if len(self.layer_types) != self.num_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers")
        unknown = set(self.layer_types) - {FULL, SLIDING}
        if unknown:
            raise ValueError(f"unknown layer types {sorted(unknown)}; use {FULL!r} or {SLIDING!r}")
        if SLIDING in self.layer_types and not self.sliding_window:
            raise ValueError("sliding_attention layers need a sliding_window")
        if self.rope_type not in ("default", "linear", "llama3"):
            raise ValueError(f"unknown rope_type {self.rope_type!r}; use default, linear or llama3")

    @property
    def window(self) -> tuple[int, int]:
        """(left, right): how far a query of a sliding layer sees before and after itself. Causal: the last
        sliding_window keys, itself included; bidirectional: every key at distance <= sliding_window."""
        w = int(self.sliding_window or 0)
        return (w - 1, 0) if self.causal else (w, w)


class DecoderLayer(nn.Module):
    """Pre-norm layer: h = x + Attn(N_attn(x)); out = h + SwiGLU(N_ffn(h))."""

    def __init__(self, cfg: DecoderConfig, rotary: RotaryEmbedding):
        super().__init__()
        H = cfg.hidden_size
        self.attn_norm = RMSNorm(H, eps=cfg.rms_norm_eps)
        self.attn = MultiHeadSelfAttention(
            H, cfg.num_heads, dropout=cfg.attention_dropout, bias=cfg.attention_bias, rotary=rotary,
            n_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, o_bias=cfg.o_bias,
            qk_norm=(lambda d: RMSNorm(d, eps=cfg.rms_norm_eps)) if cfg.qk_norm else None)
        self.ffn_norm = RMSNorm(H, eps=cfg.rms_norm_eps)
        self.ffn = GatedFeedForward(H, cfg.intermediate_size, act=cfg.hidden_act, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, position_ids: torch.Tensor,
                causal: bool = False) -> torch.Tensor:
        h = x + self.attn(self.attn_norm(x), bias, position_ids, causal)
        return h + self.ffn(self.ffn_norm(h))


class DecoderModel(nn.Module):
    """Token embeddings + L pre-norm decoder layers + a final RMSNorm; forward returns the last hidden states."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        # one rotary module (no weights) shared by every layer
        self.rotary = RotaryEmbedding(cfg.head_dim, base=cfg.rope_theta,
                                      scaling=cfg.rope_scaling if cfg.rope_type == "linear" else 1.0)
        if cfg.rope_type == "llama3":  # rescaled frequency bands instead of one interpolation factor
            self.rotary.inv_freq.copy_(llama3_frequencies(
                self.rotary.inv_freq, cfg.rope_scaling, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor,
                cfg.rope_original_max_positions))
        self.layers = nn.ModuleList(DecoderLayer(cfg, self.rotary) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)

    def _biases(self, attention_mask: torch.Tensor | None, x: torch.Tensor) -> dict[str, tuple]:
        """Per layer kind: (additive bias or None, causal flag for SDPA). A causal full layer without padding
        uses SDPA's own causal path instead of a (T, T) bias."""
        cfg, T = self.config, x.shape[1]
        padded = attention_mask is not None and not bool(attention_mask.all())
        out = {}
        for kind in set(cfg.layer_types):
            window = cfg.window if kind == SLIDING and cfg.sliding_window < T else None
            if cfg.causal and window is None and not padded:
                out[kind] = (None, True)
            else:
                out[kind] = (attention_bias(attention_mask, x.dtype, T, causal=cfg.causal, window=window,
                                            device=x.device), False)
        return out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> last hidden states (B, T, H); attention_mask 1 = token, 0 = padding (either side);
        token_type_ids is accepted and ignored (decoders have no segments)."""
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)  # (B, T)
        x = self.embed(input_ids)  # (B, T, H)
        biases = self._biases(attention_mask, x)
        for kind, layer in zip(self.config.layer_types, self.layers):
            bias, causal = biases[kind]
            x = layer(x, bias, position_ids, causal)
        return self.norm(x)
