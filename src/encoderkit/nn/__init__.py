"""The equations as modules: positional encodings, attention, encoder layers, pooling (pure torch)."""
from encoderkit.nn.attention import MultiHeadSelfAttention, allowed_bias, attention_bias, attention_mask_bias
from encoderkit.nn.layers import EncoderLayer, EncoderStack, FeedForward, GatedFeedForward, activation
from encoderkit.nn.norms import RMSNorm
from encoderkit.nn.pooling import Pooling, pool
from encoderkit.nn.positional import (
    LearnedPositionalEmbedding,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_table,
    t5_relative_bucket,
)

__all__ = [
    "MultiHeadSelfAttention", "allowed_bias", "attention_bias", "attention_mask_bias", "GatedFeedForward", "RMSNorm",
    "EncoderLayer", "EncoderStack", "FeedForward", "activation",
    "Pooling", "pool", "LearnedPositionalEmbedding", "RelativePositionBias", "RotaryEmbedding",
    "SinusoidalPositionalEncoding", "sinusoidal_table", "t5_relative_bucket",
]
