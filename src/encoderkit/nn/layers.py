"""Feed-forward block, the Transformer encoder layer (post-norm and pre-norm), and the encoder stack."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from encoderkit.nn.attention import MultiHeadSelfAttention


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def _gelu_new(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


ACTIVATIONS = {
    "gelu": F.gelu,  # exact, erf-based (BERT)
    "gelu_new": _gelu_new,  # tanh approximation, written out (GPT-2 / ALBERT)
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "quick_gelu": _quick_gelu,  # CLIP
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def activation(name: str):
    """The activation function called `name` in Hugging Face configs."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}") from None


class FeedForward(nn.Module):
    """FFN(x) = act(x W1 + b1) W2 + b2, applied to every position independently."""

    def __init__(self, d_model: int, d_ff: int, act: str = "gelu", dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff, bias=bias)
        self.fc2 = nn.Linear(d_ff, d_model, bias=bias)
        self.act = activation(act)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class GatedFeedForward(nn.Module):
    """Gated FFN (Shazeer, 2020): FFN(x) = (act(x W_gate) * (x W_up)) W_down. act = gelu: GeGLU (T5 v1.1,
    ModernBERT, Gemma); act = silu: SwiGLU (Llama, Qwen, NomicBERT). W_gate and W_up are one fused
    projection `wi` of width 2 d_ff, gate half first."""

    def __init__(self, d_model: int, d_ff: int, act: str = "silu", dropout: float = 0.0, bias: bool = False):
        super().__init__()
        self.wi = nn.Linear(d_model, 2 * d_ff, bias=bias)  # [W_gate; W_up]
        self.wo = nn.Linear(d_ff, d_model, bias=bias)  # W_down
        self.act = activation(act)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.wi(x).chunk(2, dim=-1)  # 2 x (B, T, d_ff)
        return self.wo(self.drop(self.act(gate) * up))


class EncoderLayer(nn.Module):
    """One Transformer encoder layer.
    post-norm (BERT):      H = LN(X + Attn(X));   Z = LN(H + FFN(H))
    pre-norm  (ViT, CLIP): H = X + Attn(LN(X));   Z = H + FFN(LN(H))"""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, act: str = "gelu", norm_first: bool = False,
                 ln_eps: float = 1e-12, dropout: float = 0.0, attn_dropout: float = 0.0, bias: bool = True,
                 rotary=None):
        super().__init__()
        self.attn = MultiHeadSelfAttention(d_model, n_heads, dropout=attn_dropout, bias=bias, rotary=rotary)
        self.ln1 = nn.LayerNorm(d_model, eps=ln_eps)
        self.ffn = FeedForward(d_model, d_ff, act=act, bias=bias)
        self.ln2 = nn.LayerNorm(d_model, eps=ln_eps)
        self.drop = nn.Dropout(dropout)
        self.norm_first = norm_first
        self.add_norm = None  # post-norm: a fused ln(x + y), add_norm(x, y, ln) (set by compute modes)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        if self.norm_first:
            x = x + self.drop(self.attn(self.ln1(x), bias, position_ids, causal))
            return x + self.drop(self.ffn(self.ln2(x)))
        if self.add_norm is not None and not self.training:
            h = self.add_norm(x, self.attn(x, bias, position_ids, causal), self.ln1)
            return self.add_norm(h, self.ffn(h), self.ln2)
        h = self.ln1(x + self.drop(self.attn(x, bias, position_ids, causal)))
        return self.ln2(h + self.drop(self.ffn(h)))


class EncoderStack(nn.Module):
    """N encoder layers applied in order; `schedule` lets several positions reuse one layer's weights
    (ALBERT's cross-layer sharing): layer i of the stack is layers[schedule[i]]."""

    def __init__(self, layers: list[EncoderLayer], schedule: list[int] | None = None, final_norm: nn.Module | None = None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.schedule = list(schedule) if schedule is not None else list(range(len(layers)))
        self.final_norm = final_norm

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        for i in self.schedule:
            x = self.layers[i](x, bias, position_ids, causal)
        return self.final_norm(x) if self.final_norm is not None else x
