"""The equations as modules: positional encodings, attention, encoder layers, pooling (pure torch)."""
from encoderkit.nn.attention import MultiHeadSelfAttention, attention_mask_bias
from encoderkit.nn.layers import EncoderLayer, EncoderStack, FeedForward, activation
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
    "MultiHeadSelfAttention", "attention_mask_bias", "EncoderLayer", "EncoderStack", "FeedForward", "activation",
    "Pooling", "pool", "LearnedPositionalEmbedding", "RelativePositionBias", "RotaryEmbedding",
    "SinusoidalPositionalEncoding", "sinusoidal_table", "t5_relative_bucket",
]
