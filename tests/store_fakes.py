"""A small deterministic stand-in for an Encoder in store tests: hashed bag of words through a fixed random
projection, normalized. Texts sharing words get similar vectors; no model download, microseconds per text."""
from __future__ import annotations

import re
import zlib

import numpy as np


class FakeEncoder:
    def __init__(self, dim: int = 32, name: str = "fake-hash", buckets: int = 4096, seed: int = 0):
        self.dim, self.name, self.max_length, self.tokenizer = dim, f"{name}-{dim}", 64, None
        self.buckets = buckets
        self.P = np.random.default_rng(seed).standard_normal((buckets, dim)).astype(np.float32)
        self.calls = 0

    def encode(self, texts, batch_size: int = 32, normalize: bool = True, progress=None, **_):
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        self.calls += 1
        X = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                X[i] += self.P[zlib.crc32(w.encode()) % self.buckets]
            X[i] += 1e-3 * self.P[zlib.crc32(t.encode()) % self.buckets]  # distinct texts, distinct vectors
        if normalize:
            X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        return X[0] if single else X
