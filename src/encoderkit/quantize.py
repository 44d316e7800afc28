"""Quantized embedding outputs, as sentence-transformers defines them:
int8/uint8: per-dimension scalar buckets between calibration min and max, step = (max - min) / 255,
            q = clip(floor((x - min) / step), 0, 255)  (int8 subtracts 128);
binary/ubinary: one bit per dimension (x > 0), packed 8 to a byte (binary subtracts 128 as int8)."""
from __future__ import annotations

import numpy as np

PRECISIONS = ("float32", "float16", "int8", "uint8", "binary", "ubinary")


def quantization_ranges(calibration: np.ndarray) -> np.ndarray:
    """(2, dim) array of per-dimension min and max over a calibration set of embeddings."""
    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim != 2 or calibration.shape[0] < 2:
        raise ValueError("int8/uint8 ranges need a 2-D calibration set of at least 2 embeddings "
                         "(pass calibration_embeddings=... or ranges=...)")
    return np.vstack((calibration.min(0), calibration.max(0)))


def quantize(x: np.ndarray, precision: str, ranges: np.ndarray | None = None,
             calibration_embeddings: np.ndarray | None = None) -> np.ndarray:
    """Convert float embeddings (n, dim) to `precision`; see the module docstring for the definitions."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    x = np.asarray(x, dtype=np.float32)
    if precision == "float32":
        return x
    if precision == "float16":
        return x.astype(np.float16)
    if precision in ("binary", "ubinary"):
        bits = np.packbits(x > 0, axis=-1)
        return bits if precision == "ubinary" else (bits.astype(np.int16) - 128).astype(np.int8)
    if x.shape[0] == 0:
        return np.zeros(x.shape, dtype=np.int8 if precision == "int8" else np.uint8)
    if ranges is None:
        ranges = quantization_ranges(x if calibration_embeddings is None else calibration_embeddings)
    ranges = np.asarray(ranges, dtype=np.float32)
    if ranges.shape != (2, x.shape[1]):
        raise ValueError(f"ranges must have shape (2, {x.shape[1]}), got {ranges.shape}")
    starts = ranges[0]
    steps = (ranges[1] - starts) / 255
    steps = np.where(steps == 0, 1, steps)
    q = np.clip(np.floor((x - starts) / steps), 0, 255)
    return q.astype(np.uint8) if precision == "uint8" else (q - 128).astype(np.int8)
