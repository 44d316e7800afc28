"""Semantic textual similarity: Spearman correlation between the cosine of two sentence embeddings and the
gold similarity score (the MTEB STS protocol)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np


def load_sts(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """(sentences1, sentences2, gold scores) from an STS Benchmark file (tab-separated: genre, file, year, id,
    score, sentence1, sentence2[, source columns]). A folder means its sts-test.csv."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "sts-test.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: give an STS Benchmark .csv file or its folder")
    s1, s2, gold = [], [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if not line:
                continue
            cols = line.split("\t")  # no csv quoting: sentences contain bare quotes
            if len(cols) < 7:
                raise ValueError(f"{path}:{lineno}: expected at least 7 tab-separated fields, got {len(cols)}")
            try:
                gold.append(float(cols[4]))
            except ValueError:
                raise ValueError(f"{path}:{lineno}: score {cols[4]!r} is not a number") from None
            s1.append(cols[5])
            s2.append(cols[6])
    return s1, s2, np.asarray(gold, dtype=np.float64)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def evaluate_sts(path: str | Path, encoder: Any, batch_size: int = 64, progress: bool | None = None) -> dict:
    """{"spearman": ..., "pearson": ..., "pairs": n} for cosine(enc(s1), enc(s2)) against the gold scores."""
    from scipy.stats import pearsonr

    t0 = time.perf_counter()
    s1, s2, gold = load_sts(path)
    uniq = list(dict.fromkeys(s1 + s2))
    X = encoder.encode(uniq, batch_size=batch_size, normalize=True, progress=progress)
    pos = {s: i for i, s in enumerate(uniq)}
    a = X[[pos[s] for s in s1]]
    b = X[[pos[s] for s in s2]]
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return {"spearman": round(spearman(cos, gold), 5), "pearson": round(float(pearsonr(cos, gold).statistic), 5),
            "pairs": len(gold), "seconds": round(time.perf_counter() - t0, 1)}
