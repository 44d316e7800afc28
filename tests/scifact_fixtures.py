"""BEIR SciFact encoded with all-MiniLM-L6-v2, ONCE per test run, shared by every SciFact test module
(tests/test_scifact.py: the embedded store; tests/test_scifact_pgvector.py: PostgreSQL + pgvector).
Encoding the 5,183 abstracts takes minutes on a 2-core CPU, so the result is memoized at module level (a
module is imported once per process, whichever test module asks first) and kept on disk in
ENCODERKIT_TEST_CACHE (tests/conftest.py defaults it to .pytest_cache/d/encoderkit), keyed by model name and a
hash of the texts. A file lock makes a second process (another xdist worker, a concurrent run) wait for the
first one's vectors instead of computing them again. A cached file is used only after a spot check: 16 documents
and 16 queries spread over the set are encoded again now and must match their cached rows (cosine >= 1 - 1e-5),
so a changed model or encoder never hides behind old vectors; otherwise everything is recomputed.
The bulk encode runs on the fastest exact backend installed (compute="auto": the backbone exported to OpenVINO /
ONNX Runtime, cosine >= 0.99999 to torch, about twice torch's speed on 256-token abstracts at one thread); the
same spot check then holds the fresh vectors to the torch encoder's, so the figures stay the torch path's."""
from __future__ import annotations

import functools
import hashlib
import os
import time
from pathlib import Path

import numpy as np

from conftest import data_path

_SPOT = 16


def _spot_check(enc, texts: list, V: np.ndarray) -> bool:
    idx = np.unique(np.linspace(0, len(texts) - 1, _SPOT).round().astype(int))
    if V.ndim != 2 or len(V) != len(texts):
        return False
    now = enc.encode([texts[i] for i in idx], batch_size=64, normalize=True, progress=False)
    return now.shape == V[idx].shape and float((now * V[idx]).sum(1).min()) >= 1 - 1e-5


@functools.lru_cache(maxsize=1)
def _encoded(folder: str) -> dict:
    import encoderkit
    from encoderkit.evaluate.beir import load_beir

    data = load_beir(folder)
    enc = encoderkit.load("all-MiniLM-L6-v2")
    texts, queries = data.doc_texts(), list(data.queries.values())
    key = hashlib.sha256("\n".join([enc.name, *texts, *queries]).encode()).hexdigest()[:16]
    cache_dir = os.environ.get("ENCODERKIT_TEST_CACHE")
    t0 = time.perf_counter()
    if not cache_dir:
        D, Q = _encode(_fastest(enc), texts, queries)
        return {"data": data, "enc": enc, "D": D, "Q": Q, "encode_seconds": time.perf_counter() - t0}
    from filelock import FileLock  # a dependency of huggingface_hub

    cache = Path(cache_dir) / f"scifact-{key}.npz"
    cache.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache) + ".lock"):
        D = Q = None
        if cache.exists():
            try:
                with np.load(cache) as z:
                    D, Q = z["D"], z["Q"]
            except Exception:  # a torn or foreign file: recompute
                D = Q = None
        if D is None or not (_spot_check(enc, texts, D) and _spot_check(enc, queries, Q)):
            D, Q = _encode(_fastest(enc), texts, queries)
            assert _spot_check(enc, texts, D) and _spot_check(enc, queries, Q), "the exported backend drifted from torch"
            tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, D=D, Q=Q)
            os.replace(tmp, cache)
    return {"data": data, "enc": enc, "D": D, "Q": Q, "encode_seconds": time.perf_counter() - t0}


def _fastest(enc):
    """The same model on the fastest exact compute installed (the torch encoder itself when none is)."""
    import encoderkit

    try:
        return encoderkit.load(enc.name, compute="auto")
    except (ImportError, ValueError):
        return enc


def _encode(enc, texts: list, queries: list) -> tuple:
    D = enc.encode(texts, batch_size=64, normalize=True, progress=False)
    Q = enc.encode(queries, batch_size=64, normalize=True, progress=False)
    return D, Q


def scifact_vectors() -> dict:
    """{"data": BeirData (test split), "enc": Encoder, "D": corpus vectors, "Q": query vectors (normalized)};
    skips the calling test when the SciFact folder is absent."""
    return _encoded(str(data_path("scifact")))
