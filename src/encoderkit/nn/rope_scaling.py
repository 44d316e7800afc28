"""RoPE frequency rescaling for contexts longer than pre-training: Llama 3.1's banded scaling."""
from __future__ import annotations

import math

import torch


def llama3_frequencies(inv_freq: torch.Tensor, factor: float, low_freq_factor: float, high_freq_factor: float,
                       original_context: int) -> torch.Tensor:
    """Llama 3.1: with r = original_context / wavelength (periods that fit in the pre-training context), keep
    the frequencies with r >= high_freq_factor, divide those with r <= low_freq_factor by `factor`, and blend
    linearly in r between the two: f' = (1 - s) f / factor + s f,  s = (r - low) / (high - low) clipped to [0, 1]."""
    wavelength = 2 * math.pi / inv_freq
    r = original_context / wavelength
    s = ((r - low_freq_factor) / (high_freq_factor - low_freq_factor)).clamp(0.0, 1.0)
    return (1 - s) * inv_freq / factor + s * inv_freq
