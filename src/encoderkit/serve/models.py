"""The models a server holds: each embedding model with its aliases, token preparation (truncation left or
right, or an error naming the limit), a batched forward pass and a dynamic batcher; cross-encoders likewise."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from encoderkit.long_text import encode_bounded
from encoderkit.serve.batcher import Batcher, BatchStats
from encoderkit.serve.lanes import LaneError, TokenIds, forward_batch, start_process_lanes
from encoderkit.serve.metrics import Metrics

log = logging.getLogger(__name__)


class InputTooLong(ValueError):
    """An input has more tokens than the model accepts and the request asked not to truncate."""

    def __init__(self, index: int, length: int, limit: int, at_least: bool = False):
        super().__init__(f"input {index} has {'at least ' if at_least else ''}{length} tokens, more than the "
                         f"model's limit of {limit}; shorten it or ask for truncation")
        self.index, self.length, self.limit = index, length, limit


@dataclass
class Limits:
    """Batching knobs shared by every model's batcher."""
    max_batch_tokens: int = 8192
    max_wait_ms: float = 2.0
    max_queue: int = 2048
    batching: bool = True
    lanes: int | None = None  # batches a model runs side by side; None: compute.workers.batch_lanes decides
    lane_kind: str = "auto"  # "thread", "process" (a copy of the model per lane) or "auto" (see lane_plan)


LANE_KINDS = ("auto", "thread", "process")


def lane_plan(limits: Limits, model: Any) -> tuple[int, str, int]:
    """(lanes, kind, threads per lane) for a model's batcher. The count is the configured one, else batch_lanes'
    choice (one per thread for a model torch runs on the CPU). Kind "auto" is "process" for several lanes when
    their copies of the model fit in half the RAM (their forward passes then share no interpreter lock with HTTP
    handling; measured in benchmarks/README.md), else "thread" (and then a single lane unless the count was
    given or the model runs on encoderkit's AMX kernels, whose lanes measured faster as threads too; the same
    for kind "thread" asked for)."""
    import torch

    from encoderkit.compute.workers import batch_lanes, copies_fit, uses_amx_kernels

    if limits.lane_kind not in LANE_KINDS:
        raise ValueError(f"lane kind must be one of {', '.join(LANE_KINDS)}, got {limits.lane_kind!r}")
    if not limits.batching:
        return 1, "thread", torch.get_num_threads()
    lanes = limits.lanes or batch_lanes(model)
    kind = limits.lane_kind
    if kind == "auto":
        kind = "process" if lanes > 1 and copies_fit(model, lanes) else "thread"
    if kind == "thread" and not limits.lanes and not uses_amx_kernels(model):
        lanes = 1
    return lanes, kind, max(1, torch.get_num_threads() // lanes)


def _kernel_share(lanes: int, per_lane: int) -> Callable[[], None] | None:
    """What a lane thread runs first when several lanes share this process: its AMX kernel calls split over its
    share of the threads only (None for a single lane)."""
    if lanes == 1:
        return None
    from encoderkit.compute.amx import set_lane_threads

    return lambda: set_lane_threads(per_lane)


def _thread_lanes(limits: Limits, model: Any) -> tuple[int, Callable[[], None] | None]:
    """(lanes, lane_init) for a batcher whose lanes are threads of this process (a cross-encoder's: the plan for
    its kind "thread")."""
    lanes, _, per_lane = lane_plan(replace(limits, lane_kind="thread"), model)
    return lanes, _kernel_share(lanes, per_lane)


def name_key(name: str) -> str:
    """How model names compare: case-insensitive, an Ollama ':latest' tag dropped."""
    key = name.strip().lower()
    return key[: -len(":latest")] if key.endswith(":latest") else key


def alias_names(given: str, loaded_name: str) -> list[str]:
    """Names a model answers to: as given, its hub id, the short name after '/', and known short aliases."""
    from encoderkit.checkpoints.hub import ALIASES, canonical_name

    canon = canonical_name(given)
    names = [given, canon, canon.rsplit("/", 1)[-1], loaded_name, loaded_name.rsplit("/", 1)[-1]]
    names += [a for a, target in ALIASES.items() if target == canon]
    out: list[str] = []
    for n in names:
        if n and n not in out:
            out.append(n)
    return out


class EmbeddingModel:
    """One served embedding model: `prepare_texts` / `prepare_ids` turn a request into token ids (cheap,
    call off the event loop), `embed` queues them on the batcher and returns post-processed vectors."""

    def __init__(self, given_name: str, encoder: Any, limits: Limits, metrics: Metrics | None = None):
        self.encoder = encoder
        self.name = given_name
        self.aliases = alias_names(given_name, encoder.name)
        self.ollama_name = min((a for a in self.aliases if "/" not in a), key=len, default=given_name).lower()
        self.max_length = int(encoder.max_length)
        self.dim = int(encoder.dim)
        self.loaded_at = time.time()
        self.load_seconds = 0.0
        tok = encoder.tokenizer
        if tok is None:
            raise ValueError(f"model {given_name} has no tokenizer; the server needs a text model")
        from tokenizers import Tokenizer

        self._free_tok = Tokenizer.from_str(tok.to_str())  # a private copy without truncation, for left cuts
        self._free_tok.no_truncation()
        self._free_tok.no_padding()
        probe = self._free_tok.encode("hello")
        special = probe.special_tokens_mask
        first = special.index(0) if 0 in special else len(special)
        last = len(special) - special[::-1].index(0) if 0 in special else len(special)
        self.head, self.tail = list(probe.ids[:first]), list(probe.ids[last:])
        self.vocab_size = int(tok.get_vocab_size())
        self.metrics = metrics
        self._max_batch_tokens = limits.max_batch_tokens
        lanes, kind, per_lane = lane_plan(limits, encoder)
        self._lane = threading.local()
        self.processes = []
        if kind == "process":
            try:
                self.processes = start_process_lanes(encoder, given_name, limits.max_batch_tokens, lanes, per_lane)
            except LaneError as exc:
                if limits.lane_kind == "process":  # asked for: say why not
                    raise
                log.warning("%s; model %s runs one batch at a time in the server instead", exc, given_name)
                lanes, kind, per_lane = 1, "thread", per_lane * lanes
        self.lane_kind = kind
        free = list(self.processes)
        self._lanes_lock = threading.Lock()
        share = _kernel_share(lanes, per_lane)

        def take_process() -> None:  # each lane thread takes a process of its own
            with self._lanes_lock:
                self._lane.process = free.pop()

        self.batcher = Batcher(given_name, self._run_batch, max_batch_tokens=limits.max_batch_tokens,
                               max_wait_ms=limits.max_wait_ms, max_queue=limits.max_queue,
                               batching=limits.batching, on_batch=self._on_batch, lanes=lanes,
                               lane_init=take_process if self.processes else share)
        if metrics is not None:
            metrics.queue_depth[given_name] = lambda: self.batcher.queue_depth

    def _on_batch(self, s: BatchStats) -> None:
        if self.metrics is not None:
            self.metrics.observe_batch(self.name, s.inputs, s.requests, s.tokens, s.seconds)

    # ------------------------------------------------------------------ request -> token ids
    def prompt_prefix(self, prompt_name: str | None) -> str:
        """The text prefix for prompt_name (the model's default prompt when None), as Encoder.encode applies it."""
        enc = self.encoder
        if prompt_name is not None:
            if prompt_name not in enc.prompts:
                raise ValueError(f"unknown prompt_name {prompt_name!r}; this model has: {sorted(enc.prompts) or 'none'}")
            return enc.prompts[prompt_name]
        return enc.prompts.get(enc.default_prompt_name, "") if enc.default_prompt_name else ""

    def _cut(self, ids: list[int], direction: str) -> list[int]:
        """Keep the special tokens at both ends and as much content as fits, dropping from `direction`."""
        h, t = len(self.head), len(self.tail)
        body = ids[h: len(ids) - t]
        room = max(0, self.max_length - h - t)
        body = body[:room] if direction == "right" else body[len(body) - room:] if room else []
        return ids[:h] + body + ids[len(ids) - t:]

    def prepare_texts(self, texts: Sequence[str], *, truncate: bool = True, direction: str = "right",
                      prompt_name: str | None = None) -> list[list[int]]:
        """Token ids per text, with the model's prompt prefix; over-long texts are cut (truncate) or raise
        InputTooLong naming the first one."""
        prefix = self.prompt_prefix(prompt_name)
        full = [prefix + t for t in texts] if prefix else list(texts)
        if self.encoder.do_lower_case:
            full = [t.lower() for t in full]
        skip = self.encoder.prompt_length(prefix) if prefix and not self.encoder.include_prompt else 0
        if direction == "right":  # a 5 MB text is read only as far as the model's limit (long_text.py)
            tok = self.encoder.tokenizer
            encs, cut = encode_bounded(tok.encode_batch, full, self.max_length, lambda e: bool(e.overflowing),
                                       from_end=(tok.truncation or {}).get("direction") == "left")
            out = []
            for i, e in enumerate(encs):
                if e.overflowing and not truncate:
                    read = full[i] if cut[i] is None else cut[i]
                    raise InputTooLong(i, len(self._free_tok.encode(read).ids), self.max_length, cut[i] is not None)
                out.append(TokenIds(e.ids, skip))
            return out
        out = []
        encs, cut = encode_bounded(self._free_tok.encode_batch, full, self.max_length,
                                   lambda e: len(e.ids) > self.max_length, from_end=True)
        for i, e in enumerate(encs):
            ids = TokenIds(e.ids, skip)
            if len(ids) > self.max_length:
                if not truncate:
                    raise InputTooLong(i, len(ids), self.max_length, cut[i] is not None)
                ids = TokenIds(self._cut(ids, "left"), 0)  # the prompt was cut away from the left
            out.append(ids)
        return out

    def prepare_ids(self, seqs: Sequence[Sequence[int]], *, truncate: bool = False) -> list[list[int]]:
        """Token-id inputs: the model's special tokens are added unless already there; ids must be in the vocabulary."""
        out = []
        for i, seq in enumerate(seqs):
            ids = [int(x) for x in seq]
            bad = next((x for x in ids if not 0 <= x < self.vocab_size), None)
            if bad is not None:
                raise ValueError(f"input {i}: token id {bad} is outside this model's vocabulary (0..{self.vocab_size - 1})")
            h, t = len(self.head), len(self.tail)
            if not (ids[:h] == self.head and (t == 0 or ids[len(ids) - t:] == self.tail) and len(ids) >= h + t):
                ids = self.head + ids + self.tail
            if len(ids) > self.max_length:
                if not truncate:
                    raise InputTooLong(i, len(ids), self.max_length)
                ids = self._cut(ids, "right")
            out.append(ids)
        return out

    # ------------------------------------------------------------------ forward (worker thread)
    def _run_batch(self, seqs: list[list[int]]) -> list[np.ndarray]:
        """Pooled (projected, unnormalized) vectors for token-id sequences: in this lane's process when the
        model has process lanes, else here (forward_batch)."""
        lane = getattr(self._lane, "process", None)
        if lane is not None:
            return lane.run(seqs)
        return forward_batch(self.encoder, seqs, self._max_batch_tokens, self.batcher.wanted)

    async def embed(self, seqs: list[list[int]], *, normalize: bool | None = None,
                    dimensions: int | None = None) -> np.ndarray:
        """(n, dimensions or dim) float32 vectors for prepared token ids, equal to Encoder.encode's."""
        if dimensions is not None and not 0 < dimensions <= self.dim:
            raise ValueError(f"dimensions must be between 1 and {self.dim} for this model, got {dimensions}")
        if not seqs:
            return np.zeros((0, dimensions or self.dim), np.float32)
        raw = await self.batcher.submit(seqs, cost=sum(len(s) for s in seqs))
        vecs = np.stack(raw).astype(np.float32)
        if dimensions:
            vecs = vecs[:, :dimensions]
        if self.encoder.normalize if normalize is None else normalize:
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def close(self) -> None:
        self.batcher.close()
        for lane in self.processes:
            lane.close()


class RerankModel:
    """One served cross-encoder: (query, passage) pairs from concurrent requests share forward batches."""

    def __init__(self, given_name: str, cross_encoder: Any, limits: Limits, metrics: Metrics | None = None):
        self.name, self.ce, self.metrics = given_name, cross_encoder, metrics
        self.aliases = [given_name]
        self.max_length = int(cross_encoder.max_length)
        lanes, lane_init = _thread_lanes(limits, cross_encoder)
        self.batcher = Batcher(f"rerank:{given_name}", self._run_batch, max_batch_tokens=limits.max_batch_tokens,
                               max_wait_ms=limits.max_wait_ms, max_queue=limits.max_queue,
                               batching=limits.batching, on_batch=self._on_batch, lanes=lanes, lane_init=lane_init)
        if metrics is not None:
            metrics.queue_depth[f"rerank:{given_name}"] = lambda: self.batcher.queue_depth

    def _on_batch(self, s: BatchStats) -> None:
        if self.metrics is not None:
            self.metrics.observe_batch(f"rerank:{self.name}", s.inputs, s.requests, s.tokens, s.seconds)

    def count_tokens(self, query: str, texts: Sequence[str], truncate: bool = True) -> int:
        """Tokens the pairs take (after truncation); InputTooLong when a pair overflows and truncate is False."""
        encs = self.ce.tokenizer.encode_batch([(query, t) for t in texts])
        for i, e in enumerate(encs):
            if e.overflowing and not truncate:
                raise InputTooLong(i, len(e.ids) + sum(len(o.ids) for o in e.overflowing), self.max_length)
        return sum(len(e.ids) for e in encs)

    def _run_batch(self, pairs: list[tuple[str, str]]) -> list[np.ndarray]:
        return list(self.ce.logits(pairs, batch_size=64))

    async def scores(self, query: str, texts: Sequence[str], cost: int, raw: bool = False) -> np.ndarray:
        """Relevance per text: the positive label's logit when raw, else its sigmoid (one label) or
        softmax probability (several), as TEI reports them."""
        if not texts:
            return np.zeros(0, np.float32)
        z = np.stack(await self.batcher.submit([(query, t) for t in texts], cost=cost))  # (n, labels)
        if z.shape[1] == 1:
            return z[:, 0] if raw else 1.0 / (1.0 + np.exp(-z[:, 0]))
        if raw:
            return z[:, self.ce.positive_label]
        e = np.exp(z - z.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True))[:, self.ce.positive_label]

    def close(self) -> None:
        self.batcher.close()


class ModelRegistry:
    """Embedding and rerank models by name and alias; the first embedding model is the default."""

    def __init__(self) -> None:
        self.embedders: list[EmbeddingModel] = []
        self.rerankers: list[RerankModel] = []
        self._by_name: dict[str, EmbeddingModel] = {}
        self._rerank_by_name: dict[str, RerankModel] = {}

    def add(self, model: EmbeddingModel) -> None:
        self.embedders.append(model)
        for a in model.aliases:
            self._by_name.setdefault(name_key(a), model)

    def add_reranker(self, model: RerankModel) -> None:
        self.rerankers.append(model)
        self._rerank_by_name.setdefault(name_key(model.name), model)

    def get(self, name: str | None) -> EmbeddingModel | None:
        """The embedding model called `name` (any alias; None or '' = the default), or None."""
        if not name:
            return self.embedders[0] if self.embedders else None
        return self._by_name.get(name_key(name))

    def get_reranker(self, name: str | None) -> RerankModel | None:
        if not name:
            return self.rerankers[0] if self.rerankers else None
        return self._rerank_by_name.get(name_key(name))

    def close(self) -> None:
        for m in [*self.embedders, *self.rerankers]:
            m.close()
