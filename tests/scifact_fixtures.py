"""BEIR SciFact encoded with all-MiniLM-L6-v2, ONCE per test session, shared by every SciFact test module
(tests/test_scifact.py: the embedded store; tests/test_scifact_pgvector.py: PostgreSQL + pgvector).
Encoding the 5,183 abstracts takes minutes on a 2-core CPU, so the result is memoized at module level (a
module is imported once per process, whichever test module asks first) and, when ENCODERKIT_TEST_CACHE=DIR
is set, kept on disk between sessions (keyed by model name and a hash of the texts)."""
from __future__ import annotations

import functools
import hashlib
import os
import time
from pathlib import Path

import numpy as np

from conftest import data_path


@functools.lru_cache(maxsize=1)
def _encoded(folder: str) -> dict:
    import encoderkit
    from encoderkit.evaluate.beir import load_beir

    data = load_beir(folder)
    enc = encoderkit.load("all-MiniLM-L6-v2")
    texts, queries = data.doc_texts(), list(data.queries.values())
    key = hashlib.sha256("\n".join([enc.name, *texts, *queries]).encode()).hexdigest()[:16]
    cache = Path(os.environ["ENCODERKIT_TEST_CACHE"]) / f"scifact-{key}.npz" if os.environ.get("ENCODERKIT_TEST_CACHE") else None
    t0 = time.perf_counter()
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            D, Q = z["D"], z["Q"]
    else:
        D = enc.encode(texts, batch_size=64, normalize=True, progress=False)
        Q = enc.encode(queries, batch_size=64, normalize=True, progress=False)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, D=D, Q=Q)
    return {"data": data, "enc": enc, "D": D, "Q": Q, "encode_seconds": time.perf_counter() - t0}


def scifact_vectors() -> dict:
    """{"data": BeirData (test split), "enc": Encoder, "D": corpus vectors, "Q": query vectors (normalized)};
    skips the calling test when the SciFact folder is absent."""
    return _encoded(str(data_path("scifact")))
