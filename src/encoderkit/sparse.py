"""Learned sparse vectors (SPLADE and inference-free static sides): `Encoder.encode(texts, output="sparse")` gives a
scipy CSR matrix (n, vocabulary size); `decode` turns a row back into (token, weight) pairs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from encoderkit.nn.splade import top_k_active, splade_pool


@dataclass
class SparseSpec:
    kind: str = "splade"  # "splade": MLM logits -> SPLADE pooling; "static": w[token] for the tokens a text holds
    pooling: str = "max"  # SPLADE pooling over tokens: max | sum
    activation: str = "relu"  # relu | log1p_relu
    max_active_dims: int | None = None  # keep only the k largest weights per text (None: all)


def _csr(rows: list[tuple[np.ndarray, np.ndarray]], width: int):
    import scipy.sparse as sp

    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(i) for i, _ in rows])
    idx = np.concatenate([i for i, _ in rows]) if rows else np.zeros(0, np.int64)
    val = np.concatenate([v for _, v in rows]) if rows else np.zeros(0, np.float32)
    return sp.csr_matrix((val.astype(np.float32), idx.astype(np.int32), indptr), shape=(len(rows), width))


def encode_sparse(enc: Any, inputs: Any, *, batch_size: int = 32, prompt: str | None = None,
                  prompt_name: str | None = None, max_active_dims: int | None = None, progress: bool | None = None,
                  truncate: bool = True):
    """CSR (n, V) float32 sparse vectors of `inputs` through `enc` (an Encoder whose `sparse` spec is set);
    a single string gives a (1, V) matrix."""
    spec: SparseSpec | None = getattr(enc, "sparse", None)
    if spec is None:
        raise ValueError(f"{enc.name or 'this model'} has no sparse output (it is not a SPLADE / sparse encoder "
                         "folder); use output='pooled'")
    k = max_active_dims if max_active_dims is not None else spec.max_active_dims
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"max_active_dims must be a positive integer, got {k!r}")
    V = enc.dim
    if spec.kind == "static":
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        prefix = enc._prefix(prompt, prompt_name)
        texts = [prefix + t for t in texts]
        encs = enc.tokenizer.encode_batch([t.lower() for t in texts] if enc.do_lower_case else texts,
                                          add_special_tokens=False)
        lengths, collate = [len(e.ids) for e in encs], enc._batch_tensors
    else:
        single, encs, lengths, collate, _ = enc._prepare(inputs, prompt, prompt_name, truncate)
    rows: list[Any] = [None] * len(encs)
    order = np.argsort([-n for n in lengths], kind="stable")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(encs), desc="encode sparse", unit="input")
    with torch.inference_mode():
        for s in range(0, len(encs), batch_size):
            idx = order[s:s + batch_size]
            batch = {key: v.to(enc.device) for key, v in collate([encs[i] for i in idx]).items()}
            out = enc.model(**batch)  # static: (B, V); splade: logits (B, T, V)
            if spec.kind != "static":
                out = splade_pool(out.float(), batch["attention_mask"], spec.pooling, spec.activation)
            out = top_k_active(out.float(), k)
            nz = out.nonzero()  # (nnz, 2) row-major
            vals = out[nz[:, 0], nz[:, 1]].cpu().numpy()
            r, c = nz[:, 0].cpu().numpy(), nz[:, 1].cpu().numpy()
            for j, i in enumerate(idx):
                sel = r == j
                rows[i] = (c[sel], vals[sel])
            if bar is not None:
                bar.update(len(idx))
    if bar is not None:
        bar.close()
    return _csr(rows, V)


def decode(tokenizer: Any, row: Any, top_k: int | None = None) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
    """(token, weight) pairs of a sparse vector, heaviest first (top_k of them when given). row: one row of the CSR
    `encode(output="sparse")` gives (or a dense vector); a matrix of several rows gives one list per row."""
    import scipy.sparse as sp

    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    if isinstance(row, torch.Tensor):
        row = row.to_dense().cpu().numpy() if row.is_sparse else row.cpu().numpy()
    m = sp.csr_matrix(row if sp.issparse(row) else np.atleast_2d(np.asarray(row, dtype=np.float32)))
    out = []
    for r in range(m.shape[0]):
        lo, hi = m.indptr[r], m.indptr[r + 1]
        ids, w = m.indices[lo:hi], m.data[lo:hi]
        keep = w != 0
        ids, w = ids[keep], w[keep]
        order = np.argsort(-w, kind="stable")[:top_k]
        out.append([(tokenizer.id_to_token(int(ids[o])), float(w[o])) for o in order])
    return out[0] if m.shape[0] == 1 else out
