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


def _free_tokenizer(enc: Any) -> Any:
    """The encoder's tokenizer without truncation or padding (cached on the encoder), to measure whole texts."""
    tok = enc.__dict__.get("_late_free_tokenizer")
    if tok is None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(enc.tokenizer.to_str())
        tok.no_truncation()
        tok.no_padding()
        enc.__dict__["_late_free_tokenizer"] = tok
    return tok


def _passes(bounds: list[tuple[int, int]], n_tokens: int, budget: int) -> list[tuple[int, int, list[int]]]:
    """Group chunks (first, last token) into passes of at most `budget` tokens: (first, last token of the pass,
    chunk indices). Consecutive chunks share a pass while they fit; each pass then widens evenly to its budget with
    the text around it, so every chunk sees as much context as the window holds."""
    groups: list[list[int]] = []
    for j, (a, b) in enumerate(bounds):
        if b - a + 1 > budget:
            raise ValueError(f"chunk {j} spans {b - a + 1} tokens, more than the {budget} one pass holds; "
                             "use smaller chunks or a larger context")
        if groups and b - bounds[groups[-1][0]][0] + 1 <= budget:
            groups[-1].append(j)
        else:
            groups.append([j])
    out = []
    for g in groups:
        a, b = bounds[g[0]][0], max(bounds[j][1] for j in g)
        left = max(0, a - (budget - (b - a + 1)) // 2)
        right = min(n_tokens - 1, left + budget - 1)
        left = max(0, right - budget + 1)
        out.append((left, right, g))
    return out


def encode_long(enc: Any, text: str, spans: Sequence[tuple[int, int]], *, normalize: bool | None = None,
                prompt: str | None = None) -> np.ndarray:
    """(n_spans, dim): one vector per character span of a text of any length, by late chunking. A text that fits the
    model's window is one pass (as encode(text, chunks=spans)); a longer one is read in passes of at most the window,
    each holding consecutive spans plus the text around them (Günther et al.'s long late chunking)."""
    spans = [(int(a), int(b)) for a, b in spans]
    if not spans:
        return np.zeros((0, enc.dim), np.float32)
    for j, (a, b) in enumerate(spans):
        if not 0 <= a < b <= len(text):
            raise ValueError(f"chunk {j} = ({a}, {b}) is not a span of the text (length {len(text)})")
    tok = _free_tokenizer(enc)
    prefix = enc._prefix(prompt, None)
    specials = len(tok.encode("x").ids) - len(tok.encode("x", add_special_tokens=False).ids)
    budget = enc.max_length - specials - len(tok.encode(prefix, add_special_tokens=False).ids) - 2  # 2: re-cut words
    body = text.lower() if enc.do_lower_case else text
    offs = [o for o in tok.encode(body, add_special_tokens=False).offsets if o[1] > o[0]]
    if len(offs) <= budget:
        return encode_chunks(enc, text, spans, prompt=prompt, normalize=normalize)
    bounds = []
    for j, (a, b) in enumerate(spans):
        inside = [i for i, (s, e) in enumerate(offs) if s < b and e > a]
        if not inside:
            raise ValueError(f"chunk {j} = ({a}, {b}) holds no token")
        bounds.append((inside[0], inside[-1]))
    out = np.zeros((len(spans), enc.dim), np.float32)
    for left, right, group in _passes(bounds, len(offs), budget):
        start, end = offs[left][0], offs[right][1]
        rel = [(max(spans[j][0], start) - start, min(spans[j][1], end) - start) for j in group]
        out[group] = encode_chunks(enc, text[start:end], rel, prompt=prompt, normalize=normalize)
    return out
