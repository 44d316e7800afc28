"""Splitting a long text into chunks sized in the model's tokens, on sentence and word boundaries.

Words are runs of non-space characters; each word costs the tokens the model's tokenizer gives it (its offsets
tell which tokens fall inside which word). A chunk is the longest run of whole words that fits `size` tokens,
cut at the last sentence end inside it when that keeps at least half of it; the next chunk starts on a word
(a sentence start when one is in reach) so that at most `overlap` tokens repeat. Only a single word longer
than `size` tokens (a URL, a DNA string) is ever cut inside, into token windows."""
from __future__ import annotations

import re
from typing import Any

_WORD = re.compile(r"\S+")
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*$")


def _token_spans(text: str, tokenizer: Any) -> list[tuple[int, int]]:
    """Character span of each token of the text (no special tokens)."""
    enc = tokenizer.encode(text, add_special_tokens=False)
    return [tuple(o) for o in enc.offsets if o[1] > o[0]]


def _words(text: str, tokenizer: Any) -> tuple[list[tuple[int, int]], list[list[tuple[int, int]]]]:
    """The words' character spans and, per word, the token spans inside it (the word itself without a tokenizer)."""
    words = [m.span() for m in _WORD.finditer(text)]
    if tokenizer is None:
        return words, [[w] for w in words]
    tokens = _token_spans(text, tokenizer)
    per_word: list[list[tuple[int, int]]] = [[] for _ in words]
    w = 0
    for t in tokens:
        while w < len(words) - 1 and t[0] >= words[w][1]:
            w += 1
        per_word[w].append(t)
    for i, toks in enumerate(per_word):
        if not toks:  # a tokenizer that drops a word (unknown characters) still leaves it one token of room
            per_word[i] = [words[i]]
    return words, per_word


def _sentence_starts(text: str, words: list[tuple[int, int]]) -> set[int]:
    """Indexes of the words that begin a sentence (after a word ending in . ! ? or after a blank line)."""
    starts = {0}
    for i in range(1, len(words)):
        prev = text[words[i - 1][0]:words[i - 1][1]]
        gap = text[words[i - 1][1]:words[i][0]]
        if _SENTENCE_END.search(prev) or gap.count("\n") >= 2:
            starts.add(i)
    return starts


def _end(cost: list[int], s: int, size: int, starts: set[int]) -> int:
    """Where the chunk that begins at word s ends (exclusive): as many words as fit, back to a sentence end when
    that keeps at least half of the tokens."""
    e, total = s, 0
    while e < len(cost) and total + cost[e] <= size:
        total += cost[e]
        e += 1
    if e == len(cost):
        return e
    kept = 0
    cut = None
    for j in range(s + 1, e + 1):
        kept += cost[j - 1]
        if j in starts and kept * 2 >= total:
            cut = j
    return cut or e


def _next_start(cost: list[int], s: int, e: int, overlap: int, size: int, starts: set[int]) -> int:
    """The first word of the next chunk: the earliest word after s from which at most `overlap` tokens reach e
    (and word e still fits after them, so the next chunk gets further), moved forward to a sentence start when
    one lies in that overlap."""
    budget = min(overlap, size - cost[e])
    j, back = e, 0
    while j - 1 > s and back + cost[j - 1] <= budget:
        back += cost[j - 1]
        j -= 1
    at_sentence = [i for i in range(j, e) if i in starts]
    return at_sentence[0] if at_sentence else j


def _pack(text: str, words: list, toks: list, cost: list[int], starts: set[int], size: int, overlap: int) -> list[str]:
    """The chunks, by the words' token costs."""
    chunks, s = [], 0
    while s < len(words):
        if cost[s] > size:  # one word longer than a chunk: the only case cut inside a word
            step = max(1, size - overlap)
            for a in range(0, cost[s], step):
                window = toks[s][a:a + size]
                chunks.append(text[window[0][0]:window[-1][1]])
                if a + size >= cost[s]:
                    break
            s += 1
            continue
        e = _end(cost, s, size, starts)
        chunks.append(text[words[s][0]:words[e - 1][1]])
        if e >= len(words):
            break
        s = max(s + 1, _next_start(cost, s, e, overlap, size, starts))
    return chunks


def _per_word(tokenizer: Any) -> bool:
    """Whether a word's tokens never depend on its neighbours (WordPiece: a chunk of whole words tokenized alone
    has exactly the tokens it had in the document), so chunks need no second tokenization."""
    return type(getattr(tokenizer, "model", None)).__name__ == "WordPiece"


def chunk_text(text: str, tokenizer: Any, size: int, overlap: int) -> list[str]:
    """Split text into chunks of at most `size` tokens of `tokenizer` (words when None), whole words only, cut at
    sentence ends where possible; consecutive chunks share at most `overlap` tokens of whole words."""
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"need chunk size >= 1 and 0 <= overlap < size, got size {size}, overlap {overlap}")
    words, toks = _words(text, tokenizer)
    cost = [len(t) for t in toks]
    if sum(cost) <= size:
        return [text]
    starts = _sentence_starts(text, words)
    budget = size
    while True:
        chunks = _pack(text, words, toks, cost, starts, budget, min(overlap, budget - 1))
        if tokenizer is None or budget == 1 or (_per_word(tokenizer) and max(cost) <= budget):
            return chunks
        # tokenized on its own a chunk can take a token more than in context (a BPE word without its leading
        # space, a word piece without its "##"): checked all at once, and packed tighter in that rare case
        excess = max(len(e.ids) for e in tokenizer.encode_batch(chunks, add_special_tokens=False)) - size
        if excess <= 0:
            return chunks
        budget = max(1, budget - excess)


__all__ = ["chunk_text"]
