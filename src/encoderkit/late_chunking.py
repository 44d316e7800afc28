"""Late chunking (Günther et al., 2024): encode a long text ONCE, then pool each chunk's token vectors from that
single pass, so every chunk vector has seen the whole text. Chunks are character spans, sentences, or token windows."""
from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import torch

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text` (split after . ! ? followed by whitespace)."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        if text[start:m.start()].strip():
            spans.append((start, m.start()))
        start = m.end()
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


def _token_masks(offsets: list[tuple[int, int]], special: list[int], shift: int, text: str, chunks: Any) -> list[list[int]]:
    """Token positions of each chunk: tokens whose characters overlap the chunk span (special and prompt tokens never)."""
    real = [i for i, ((s, e), sp) in enumerate(zip(offsets, special)) if not sp and e > s and s >= shift]
    if isinstance(chunks, int) and not isinstance(chunks, bool):
        if chunks < 1:
            raise ValueError(f"a token window must be a positive number of tokens, got {chunks}")
        return [real[i:i + chunks] for i in range(0, len(real), chunks)]
    if chunks in ("sentence", "sentences"):
        spans = sentence_spans(text)
    elif isinstance(chunks, str):
        raise ValueError(f"chunks must be character spans, 'sentences' or a token window size, got {chunks!r}")
    else:
        spans = [(int(a), int(b)) for a, b in chunks]
    out = []
    for j, (a, b) in enumerate(spans):
        if not 0 <= a < b <= len(text):
            raise ValueError(f"chunk {j} = ({a}, {b}) is not a span of the text (length {len(text)})")
        toks = [i for i in real if offsets[i][0] - shift < b and offsets[i][1] - shift > a]
        if not toks:
            raise ValueError(f"chunk {j} = ({a}, {b}) has no token within the model's {len(offsets)}-token window "
                             "(the text is truncated there); load the model with a larger max_length or split the text")
        out.append(toks)
    return out


def encode_chunks(enc: Any, inputs: str | Sequence[str], chunks: Any, *, prompt: str | None = None,
                  prompt_name: str | None = None, normalize: bool | None = None) -> np.ndarray | list[np.ndarray]:
    """One vector per chunk of each text, pooled (the model's pooling, Dense, normalization) from one forward pass of
    the whole text. A single text gives (n_chunks, dim); a list gives one such array per text (chunks then is one
    spec for all texts, or a list of span lists, one per text)."""
    single = isinstance(inputs, str)
    texts = [inputs] if single else list(inputs)
    per_text = (not single and isinstance(chunks, (list, tuple)) and len(chunks) == len(texts)
                and all(isinstance(c, (list, tuple)) and (not c or isinstance(c[0], (list, tuple))) for c in chunks))
    prefix = enc._prefix(prompt, prompt_name)
    do_norm = enc.normalize if normalize is None else bool(normalize)
    out = []
    with torch.inference_mode():
        for n, text in enumerate(texts):
            full = prefix + text
            e = enc.tokenize([full])[0]
            groups = _token_masks(list(e.offsets), list(e.special_tokens_mask), len(prefix), text,
                                  chunks[n] if per_text else chunks)
            batch = {k: v.to(enc.device) for k, v in enc._batch_tensors([e]).items()}
            hidden = enc._forward(batch)  # (1, T, H)
            mask = torch.zeros(len(groups), hidden.shape[1], dtype=torch.long, device=hidden.device)  # (C, T)
            for c, toks in enumerate(groups):
                mask[c, toks] = 1
            v = enc.pool_hidden(hidden.expand(len(groups), -1, -1), mask).cpu().numpy()  # (C, D)
            if do_norm:
                v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            out.append(np.ascontiguousarray(v, dtype=np.float32))
    return out[0] if single else out
