"""Semantic textual similarity: Spearman correlation between the cosine of two sentence embeddings and the
gold similarity score (the MTEB STS protocol)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from encoderkit.evaluate.pairs import PairColumns, load_pairs, pairs_file


def load_sts(path: str | Path, columns: PairColumns | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """(sentences1, sentences2, gold scores) from an STS Benchmark file or folder (its sts-test.csv), or any
    pairs file: TSV / CSV with a header, or JSONL (see encoderkit.evaluate.pairs.load_pairs)."""
    return load_pairs(path, columns)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def evaluate_sts(path: str | Path, encoder: Any, batch_size: int = 64, progress: bool | None = None,
                 columns: PairColumns | None = None) -> dict:
    """{"spearman": ..., "pearson": ..., "pairs": n, "score_range": [lo, hi]} for cosine(enc(s1), enc(s2))
    against the gold scores; any score range works (Spearman compares ranks only)."""
    from scipy.stats import pearsonr

    t0 = time.perf_counter()
    s1, s2, gold = load_sts(path, columns)
    uniq = list(dict.fromkeys(s1 + s2))
    X = encoder.encode(uniq, batch_size=batch_size, normalize=True, progress=progress)
    pos = {s: i for i, s in enumerate(uniq)}
    a = X[[pos[s] for s in s1]]
    b = X[[pos[s] for s in s2]]
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return {"spearman": round(spearman(cos, gold), 5), "pearson": round(float(pearsonr(cos, gold).statistic), 5),
            "pairs": len(gold), "file": pairs_file(path).name, "score_range": [float(gold.min()), float(gold.max())],
            "seconds": round(time.perf_counter() - t0, 1)}
