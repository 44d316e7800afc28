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


class FakeSparseLateEncoder(FakeEncoder):
    """FakeEncoder plus the sparse / multi-vector contract of Encoder: output="sparse" gives a CSR (n, vocab) of
    log(1 + count) per hashed word (a query side of weight 1 per word); output="multivector" one unit vector per
    word (its row of a fixed random table) plus a small per-position jitter; decode(row, top_k) gives words back."""

    def __init__(self, dim: int = 32, vocab: int = 997, late_dim: int = 16, name: str = "fake-multi", seed: int = 0):
        super().__init__(dim=dim, name=name, seed=seed)
        self.vocab, self.late_dim = vocab, late_dim
        rng = np.random.default_rng(seed + 1)
        self.T = rng.standard_normal((vocab, late_dim)).astype(np.float32)
        self.T /= np.linalg.norm(self.T, axis=1, keepdims=True)
        self.words: dict[int, str] = {}

    def _term(self, w: str) -> int:
        t = zlib.crc32(w.encode()) % self.vocab
        self.words.setdefault(t, w)
        return t

    def encode(self, texts, batch_size: int = 32, normalize: bool = True, progress=None, output: str = "pooled",
               task: str | None = None, **kw):
        if output == "pooled":
            return super().encode(texts, batch_size=batch_size, normalize=normalize)
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        self.calls += 1
        if output == "sparse":
            from scipy.sparse import csr_matrix

            rows, cols, vals = [], [], []
            for i, t in enumerate(texts):
                counts: dict[int, int] = {}
                for w in re.findall(r"\w+", t.lower()):
                    counts[self._term(w)] = counts.get(self._term(w), 0) + 1
                for term, c in sorted(counts.items()):
                    rows.append(i)
                    cols.append(term)
                    vals.append(1.0 if task == "query" else float(np.log1p(c)))
            return csr_matrix((np.asarray(vals, np.float32), (rows, cols)), shape=(len(texts), self.vocab))
        if output == "multivector":
            out = []
            for t in texts:
                terms = [self._term(w) for w in re.findall(r"\w+", t.lower())] or [0]
                X = self.T[terms] + 0.01 * np.arange(len(terms), dtype=np.float32)[:, None] / (1 + len(terms))
                out.append(X.astype(np.float32))
            return out
        raise ValueError(f"output must be 'pooled', 'sparse' or 'multivector', got {output!r}")

    def encode_query(self, texts, **kw):
        return self.encode(texts, task="query", **kw)

    def encode_document(self, texts, **kw):
        return self.encode(texts, task="document", **kw)

    def decode(self, row, top_k: int | None = None):
        row = row.tocsr()
        order = np.argsort(-row.data, kind="stable")[:top_k]
        return [(self.words.get(int(row.indices[i]), f"#{int(row.indices[i])}"), float(row.data[i])) for i in order]
