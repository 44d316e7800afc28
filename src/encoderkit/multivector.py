"""Multi-vector (late-interaction, ColBERT-style) outputs: one vector per token, projected (Dense), normalized, and
masked the ColBERT way: queries marked and expanded with [MASK] to a fixed length (the expansion positions are
scored), documents marked and stripped of skiplist tokens (punctuation). `Encoder.encode(texts,
output="multivector", task="query"|"document")` -> list of (n_i, d) float32 arrays. A dense model gives its own
token vectors, normalized, once `encoder.token_late = True` (off by default, so collections do not store them
unasked)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class LateSpec:
    query_length: int | None = None  # token cap of queries (None: the model's max_length)
    document_length: int | None = None  # token cap of documents
    expansion: dict | None = None  # {"strategy": "fixed"|"min", "attend": bool, "token": str|None, "length": int}
    insert_ids: dict[str, int] = field(default_factory=dict)  # side -> marker token id inserted after the first token (PyLate)
    skiplist_words: list[str] = field(default_factory=list)  # tokens left out of scoring on the skiplist_tasks sides
    skiplist_ids: list[int] = field(default_factory=list)
    skiplist_tasks: list[str] = field(default_factory=lambda: ["document"])
    normalize: bool = True  # L2-normalize each token vector
    expansion_id: int | None = None  # the id expansion positions get ([MASK] by default)
    layout: str = "st"  # how the folder was written: "st" (MultiVectorEncoder) | "pylate" (ColBERT config keys)
    extra: dict = field(default_factory=dict)  # layout-specific keys written back on save (PyLate prefixes...)


_PLAIN = LateSpec()  # a dense model with `token_late = True`: its token vectors, normalized


def _truncating(enc: Any, n: int):
    """The encoder's tokenizer truncating at n tokens (a cached copy; the shared one keeps its own limit)."""
    cache = enc.__dict__.setdefault("_late_tokenizers", {})
    if n not in cache:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(enc.tokenizer.to_str())
        tok.no_padding()
        tok.enable_truncation(max_length=n)
        cache[n] = tok
    return cache[n]


def _batch(enc: Any, spec: LateSpec, encs: list[Any], side: str) -> dict[str, torch.Tensor]:
    ins = spec.insert_ids.get(side)
    seqs = []
    for e in encs:
        ids, types = list(e.ids), list(e.type_ids)
        if ins is not None:
            ids, types = ids[:1] + [ins] + ids[1:], types[:1] + [0] + types[1:]
        seqs.append((ids, types))
    exp = spec.expansion if side == "query" else None
    T = max(len(s[0]) for s in seqs)
    if exp is not None:
        T = exp["length"] if exp["strategy"] == "fixed" else max(T, exp["length"])
    B = len(seqs)
    ids = torch.full((B, T), enc.pad_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    types = torch.zeros((B, T), dtype=torch.long)
    for r, (i, t) in enumerate(seqs):
        ids[r, :len(i)], mask[r, :len(i)], types[r, :len(i)] = torch.tensor(i), 1, torch.tensor(t)
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    if exp is not None:
        pos = (mask == 0) & (torch.arange(T)[None, :] < exp["length"])  # (B, T) expansion positions
        if spec.expansion_id is not None:
            out["input_ids"] = ids.masked_fill(pos, spec.expansion_id)
        if exp.get("attend"):
            out["attention_mask"] = mask.masked_fill(pos, 1)
        out["_expansion"] = pos
    return out


def encode_multivector(enc: Any, inputs: Any, *, task: str | None = None, batch_size: int = 32,
                       prompt: str | None = None, prompt_name: str | None = None, normalize: bool | None = None,
                       progress: bool | None = None, plain: bool = False) -> list[np.ndarray] | np.ndarray:
    """Token vectors of `inputs` (list of (n_i, d) float32 arrays; one array for a single string). task "query" uses
    the query marker, length and expansion; anything else is encoded as a document. plain: a dense model's own
    token vectors, normalized, as with `token_late` (a collection that holds them asks so)."""
    spec: LateSpec = getattr(enc, "late", None)
    if spec is None:
        if not (plain or getattr(enc, "token_late", False)):
            raise ValueError(f"{enc.name or 'this model'} has no multi-vector (ColBERT) head; set "
                             "`encoder.token_late = True` to score its normalized token vectors (late interaction "
                             "without training), or load a MultiVectorEncoder / PyLate folder")
        spec = _PLAIN
    if enc.tokenizer is None:
        raise ValueError(f"{enc.name or 'this model'} has no tokenizer; output='multivector' takes text")
    single = isinstance(inputs, str)
    texts = [inputs] if single else list(inputs)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"input {i} is a {type(t).__name__}, expected str")
    side = "query" if task == "query" else "document"
    cap = spec.query_length if side == "query" else spec.document_length
    exp = spec.expansion if side == "query" else None
    if exp is not None:
        cap = exp["length"] if exp["strategy"] == "fixed" or cap is None else max(cap, exp["length"])
    cap = min(cap or enc.max_length, enc.max_length) - (1 if spec.insert_ids.get(side) is not None else 0)
    prefix = enc._prefix(prompt, prompt_name)
    texts = [prefix + t for t in texts]
    tok = _truncating(enc, cap)
    encs = tok.encode_batch([t.lower() for t in texts] if enc.do_lower_case else texts)
    order = np.argsort([-len(e.ids) for e in encs], kind="stable")
    skip = torch.tensor(spec.skiplist_ids, dtype=torch.long) if spec.skiplist_ids and side in spec.skiplist_tasks else None
    do_norm = spec.normalize if normalize is None else bool(normalize)
    out: list[Any] = [None] * len(encs)
    with torch.inference_mode():
        for s in range(0, len(encs), batch_size):
            idx = order[s:s + batch_size]
            batch = _batch(enc, spec, [encs[i] for i in idx], side)
            expansion = batch.pop("_expansion", None)
            keep = batch["attention_mask"].bool() if expansion is None else batch["attention_mask"].bool() | expansion
            if skip is not None:
                keep &= ~torch.isin(batch["input_ids"], skip)
            v = enc._forward({k: t.to(enc.device) for k, t in batch.items()}).float()  # (B, T, H)
            if getattr(enc, "late", None) is not None:
                for layer in enc.head.dense:  # token-level projections (ColBERT: H -> 128)
                    v = layer(v)  # (B, T, d)
            if do_norm:
                v = F.normalize(v, p=2, dim=-1)
            v = v.cpu()
            for r, i in enumerate(idx):
                out[i] = v[r][keep[r]].numpy().astype(np.float32, copy=True)
    return out[0] if single else out
