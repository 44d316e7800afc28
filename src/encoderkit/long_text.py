"""Tokenize very long texts in time proportional to what the model keeps. A text longer than
`max_tokens * CHARS_PER_TOKEN` characters is tokenized from a prefix (or, for left truncation, a suffix) cut at
whitespace; when that piece already overflows the model's limit, its kept tokens equal those of the whole text,
so the rest is never read. A piece that does not overflow (long runs of whitespace or ignored characters) grows
fourfold until it does or is the whole text, so the result is always the one the whole text gives."""
from __future__ import annotations

from typing import Any, Callable, Sequence

CHARS_PER_TOKEN = 16  # generous: English runs at ~4-5 characters per token, code and URLs at ~2-3


def piece(text: str, chars: int, from_end: bool = False) -> str:
    """The first (last, from_end) ~`chars` characters of text, cut at whitespace so no word is split (the
    pre-tokenizers of WordPiece, BPE and SentencePiece models all split there); the text itself when short."""
    if len(text) <= chars:
        return text
    if from_end:
        start = len(text) - chars
        ws = next((i for i in range(start, min(len(text), start + chars // 2)) if text[i].isspace()), None)
        return text[ws if ws is not None else start:]
    ws = next((i for i in range(chars, max(0, chars // 2), -1) if text[i].isspace()), None)
    return text[:ws if ws is not None else chars]


def encode_bounded(encode_batch: Callable[[list[str]], list[Any]], texts: Sequence[str], max_tokens: int,
                   overflowed: Callable[[Any], bool], from_end: bool = False) -> tuple[list[Any], list[str | None]]:
    """encode_batch(texts) as if each text were whole, reading only as much of a long text as it takes to
    overflow `max_tokens`. Returns (encodings, pieces): pieces[i] is the part that stood for text i (its encoding
    overflowed, so what the model keeps is the same; the full token count is unknown), None when read whole."""
    out: list[Any] = [None] * len(texts)
    cut: list[str | None] = [None] * len(texts)
    chars = {i: max(1, max_tokens) * CHARS_PER_TOKEN for i in range(len(texts))}
    todo = list(range(len(texts)))
    while todo:
        pieces = [piece(texts[i], chars[i], from_end) for i in todo]
        again = []
        for i, p, e in zip(todo, pieces, encode_batch(pieces)):
            whole = len(p) == len(texts[i])
            if whole or overflowed(e):
                out[i], cut[i] = e, None if whole else p
            else:
                chars[i] *= 4
                again.append(i)
        todo = again
    return out, cut
