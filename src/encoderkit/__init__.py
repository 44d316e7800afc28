"""encoderkit: build neural encoders from textbook parts, load real checkpoints into them,
train them with the classic objectives and put them to work."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load", "Encoder", "__version__"]


def __getattr__(name: str):
    # Lazy: `import encoderkit` stays cheap (no torch import) until something is used.
    if name == "Encoder":
        from encoderkit.encoder import Encoder

        return Encoder
    if name == "load":
        from encoderkit.encoder import load

        return load
    raise AttributeError(f"module 'encoderkit' has no attribute {name!r}")
