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


def side_encodings(enc: Any, spec: LateSpec, texts: list[str], side: str) -> list[Any]:
    """`tokenizers` Encodings of texts on one side ("query" | "document"), truncated to that side's token cap
    (expansion length for queries; one token less when a marker is inserted)."""
    cap = spec.query_length if side == "query" else spec.document_length
    exp = spec.expansion if side == "query" else None
    if exp is not None:
        cap = exp["length"] if exp["strategy"] == "fixed" or cap is None else max(cap, exp["length"])
    cap = min(cap or enc.max_length, enc.max_length) - (1 if spec.insert_ids.get(side) is not None else 0)
    return _truncating(enc, cap).encode_batch([t.lower() for t in texts] if enc.do_lower_case else texts)


def late_batch(enc: Any, spec: LateSpec, encs: list[Any], side: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The backbone's inputs for a batch of one side (marker inserted, queries expanded) and the (B, T) bool mask of
    the positions that are scored: real tokens and expansion positions, less skiplist tokens on skiplist sides."""
    batch = _batch(enc, spec, encs, side)
    expansion = batch.pop("_expansion", None)
    keep = batch["attention_mask"].bool() if expansion is None else batch["attention_mask"].bool() | expansion
    if spec.skiplist_ids and side in spec.skiplist_tasks:
        keep &= ~torch.isin(batch["input_ids"], torch.tensor(spec.skiplist_ids, dtype=torch.long))
    return batch, keep


def project_tokens(enc: Any, hidden: torch.Tensor, normalize: bool) -> torch.Tensor:
    """(B, T, H) backbone outputs -> (B, T, d) token vectors: a ColBERT folder's token-level Dense layers (a plain
    model has none for its tokens), then L2 normalization when asked."""
    v = hidden.float()
    if getattr(enc, "late", None) is not None:
        for layer in enc.head.dense:  # token-level projections (ColBERT: H -> 128)
            v = layer(v)  # (B, T, d)
    return F.normalize(v, p=2, dim=-1) if normalize else v


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
    prefix = enc._prefix(prompt, prompt_name)
    encs = side_encodings(enc, spec, [prefix + t for t in texts], side)
    order = np.argsort([-len(e.ids) for e in encs], kind="stable")
    do_norm = spec.normalize if normalize is None else bool(normalize)
    out: list[Any] = [None] * len(encs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(encs), desc=f"token vectors ({side}s)", unit="text")
    with torch.inference_mode():
        for s in range(0, len(encs), batch_size):
            idx = order[s:s + batch_size]
            batch, keep = late_batch(enc, spec, [encs[i] for i in idx], side)
            v = project_tokens(enc, enc._forward({k: t.to(enc.device) for k, t in batch.items()}), do_norm).cpu()
            for r, i in enumerate(idx):
                out[i] = v[r][keep[r]].numpy().astype(np.float32, copy=True)
            if bar is not None:
                bar.update(len(idx))
    if bar is not None:
        bar.close()
    return out[0] if single else out


# ------------------------------------------------------------------ a ColBERT head on a dense model (for training)
def _add_tokens(enc: Any, tokens: list[str]) -> list[int]:
    """Ids of `tokens` in the encoder's tokenizer, adding those it lacks (as PyLate adds its [Q] / [D] markers) and
    growing the backbone's input embedding by as many rows, each the mean of the existing rows."""
    from tokenizers import AddedToken

    tok = enc.tokenizer
    new = [t for t in dict.fromkeys(tokens) if tok.token_to_id(t) is None]
    if new:
        tok.add_tokens([AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=True) for t in new])
        enc.__dict__.pop("_late_tokenizers", None)  # truncating copies of the old tokenizer
    ids = [tok.token_to_id(t) for t in tokens]
    need = max(ids) + 1
    vocab = int(getattr(enc.config, "vocab_size", 0) or 0)
    if need > vocab:
        found = [(n, m) for n, m in enc.model.named_modules() if isinstance(m, torch.nn.Embedding)
                 and m.num_embeddings == vocab]
        if not found:
            raise ValueError(f"{enc.name or 'this model'}: no input embedding of {vocab} rows to grow for the markers "
                             f"{new}; pass markers that are tokens of its vocabulary (e.g. '[unused0]')")
        name, old = found[0]
        grown = torch.nn.Embedding(need, old.embedding_dim, padding_idx=old.padding_idx).to(old.weight)
        with torch.no_grad():
            grown.weight[:vocab] = old.weight
            grown.weight[vocab:] = old.weight.mean(0)  # (new, E) the mean embedding: no random direction
        parent = enc.model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else enc.model
        setattr(parent, name.rsplit(".", 1)[-1], grown)
        enc.config.vocab_size = need
        if enc.hf_config is not None:
            enc.hf_config = {**enc.hf_config, "vocab_size": need}
    return ids


def add_colbert_head(enc: Any, dim: int = 128, *, query_length: int = 32, document_length: int = 180,
                     query_marker: str = "[Q] ", document_marker: str = "[D] ", expansion: bool = True,
                     attend_to_expansion: bool = False, skiplist_words: list[str] | None = None) -> Any:
    """Turn a loaded dense text Encoder into an (untrained) ColBERT model in place, as PyLate builds one from a base
    encoder: query / document marker tokens inserted after the first token (added to the vocabulary when new), a
    bias-free token-level projection hidden -> dim (torch's default init; seed torch first for a fixed one) after any
    Dense layers the model had, queries expanded with [MASK] to query_length, punctuation skipped in documents,
    token vectors L2-normalized. It saves as a PyLate ColBERT folder. Returns enc."""
    import string

    from encoderkit.nn.embedding_head import Dense

    if enc.tokenizer is None or enc.routes or enc.sparse is not None or enc.late is not None:
        raise ValueError(f"{enc.name or 'this model'}: a ColBERT head goes on a plain text encoder (one route, no "
                         "sparse or multi-vector head)")
    if dim < 1 or query_length < 3 or document_length < 3:
        raise ValueError(f"dim must be >= 1 and the lengths >= 3, got {dim}, {query_length}, {document_length}")
    tok = enc.tokenizer
    mask_id = tok.token_to_id("[MASK]")
    if expansion and mask_id is None:
        raise ValueError(f"{enc.name or 'this model'} has no [MASK] token to expand queries with; pass expansion=False")
    markers = {s: m for s, m in (("query", query_marker), ("document", document_marker)) if m}
    ids = dict(zip(markers, _add_tokens(enc, list(markers.values())))) if markers else {}
    words = list(string.punctuation) if skiplist_words is None else list(skiplist_words)
    unk = tok.token_to_id("[UNK]")  # PyLate looks words up with convert_tokens_to_ids: an unknown one is [UNK]
    skip = sorted({unk if tok.token_to_id(w) is None else tok.token_to_id(w) for w in words} - {None})
    width = enc.head.dense[-1].out_features if len(enc.head.dense) else enc.hidden_size
    if width != dim:
        enc.head.dense.append(Dense(width, dim, bias=False).to(enc.device))
    enc.late = LateSpec(query_length=query_length, document_length=document_length,
                        expansion={"strategy": "fixed", "attend": bool(attend_to_expansion), "token": None,
                                   "length": query_length} if expansion else None,
                        insert_ids=ids, skiplist_words=words, skiplist_ids=skip, normalize=True,
                        expansion_id=mask_id, layout="pylate",
                        extra={"query_prefix": query_marker, "document_prefix": document_marker})
    enc.normalize, enc.similarity_fn = False, "maxsim"
    return enc
