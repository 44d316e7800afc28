"""MaxSim, the late-interaction score of ColBERT: s(q, d) = sum_i max_j <q_i, d_j> over the query's token vectors
q_i and the document's d_j."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def maxsim(query_vectors: np.ndarray, doc_vectors: np.ndarray) -> float:
    """MaxSim of one query (n_q, d) against one document (n_d, d); 0.0 when either has no vectors."""
    q, d = np.asarray(query_vectors, np.float32), np.asarray(doc_vectors, np.float32)
    if q.shape[0] == 0 or d.shape[0] == 0:
        return 0.0
    return float((q @ d.T).max(axis=1).sum())


def _pad(vectors: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    n = max((len(v) for v in vectors), default=0)
    dim = next((np.asarray(v).shape[1] for v in vectors if len(v)), 1)
    x = torch.zeros(len(vectors), max(n, 1), dim)
    m = torch.zeros(len(vectors), max(n, 1), dtype=torch.bool)
    for i, v in enumerate(vectors):
        if len(v):
            x[i, :len(v)] = torch.as_tensor(np.asarray(v, np.float32))
            m[i, :len(v)] = True
    return x, m


def maxsim_batch(queries: Sequence[np.ndarray], docs: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """(n_queries, n_docs) float32 MaxSim scores of every query against every document (padded, masked, and
    computed `batch_size` documents at a time)."""
    if not len(queries) or not len(docs):
        return np.zeros((len(queries), len(docs)), np.float32)
    q, qm = _pad(queries)  # (Q, Lq, d), (Q, Lq)
    out = np.zeros((len(queries), len(docs)), np.float32)
    with torch.inference_mode():
        for s in range(0, len(docs), batch_size):
            d, dm = _pad(docs[s:s + batch_size])  # (D, Ld, d), (D, Ld)
            sim = torch.einsum("qid,njd->qnij", q, d)  # (Q, D, Lq, Ld)
            sim = sim.masked_fill(~dm[None, :, None, :], float("-inf")).amax(-1)  # (Q, D, Lq)
            sim = torch.where(torch.isfinite(sim), sim, torch.zeros(()))
            out[:, s:s + len(d)] = (sim * qm[:, None, :]).sum(-1).numpy()
    return out
