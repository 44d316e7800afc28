"""Server configuration and the state every route shares (models, metrics, keys, collections), plus the
helpers routes use to turn model and limit failures into APIError."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from encoderkit.serve.auth import KeyRecord, KeyStore
from encoderkit.serve.batcher import Closed, QueueFull, TooManyInputs
from encoderkit.serve.errors import APIError
from encoderkit.serve.metrics import Metrics
from encoderkit.serve.models import EmbeddingModel, InputTooLong, Limits, ModelRegistry

log = logging.getLogger(__name__)

INLINE_CHARS = 4096  # requests smaller than this are tokenized on the event loop (cheaper than a thread hop)


@dataclass
class ServeConfig:
    """Everything `encoderkit serve` takes."""
    models: list[str] = field(default_factory=lambda: ["all-MiniLM-L6-v2"])
    rerank_models: list[str] = field(default_factory=list)
    store: str | None = None  # folder holding one sub-folder per collection (the CLI's default: $ENCODERKIT_HOME/collections)
    host: str = "127.0.0.1"
    port: int = 8080
    api_keys: str | None = None  # JSON key file (see auth.py); None = no authentication
    insecure: bool = False  # allow binding a non-loopback address without keys
    max_batch_tokens: int = 8192  # padded tokens per forward batch
    max_wait_ms: float = 2.0  # how long a batch waits for more requests
    max_queue: int = 2048  # inputs waiting per model before 429
    batching: bool = True  # False: one request per forward pass (for comparison)
    max_inputs: int = 2048  # inputs per request
    max_body_bytes: int = 16 * 1024 * 1024
    auto_truncate: bool = False  # OpenAI / TEI default: cut over-long inputs instead of refusing them
    graceful_timeout: float = 30.0  # seconds in-flight requests get to finish on shutdown
    switch_interval: float = 0.0005  # sys.setswitchinterval for `run` (see app.run)
    max_models: int = 2  # models loaded on first use for collections (beyond the preloaded ones), least recent evicted
    lanes: int | None = None  # batches each model runs side by side (None: serve.models.lane_plan decides)
    lane_kind: str = "auto"  # lanes as threads or processes (see serve.models.lane_plan)
    compute: str = "fp32"  # Encoder compute mode (`encoderkit serve` defaults to "auto": the fastest exact engine)

    @property
    def limits(self) -> Limits:
        return Limits(self.max_batch_tokens, self.max_wait_ms, self.max_queue, self.batching, self.lanes,
                      self.lane_kind)


class ServerState:
    """What routes share; lives at `app.state.server`."""

    def __init__(self, config: ServeConfig, registry: ModelRegistry, metrics: Metrics,
                 keys: KeyStore | None = None, collections: Any = None):
        self.config, self.registry, self.metrics = config, registry, metrics
        self.keys, self.collections = keys, collections
        self.started = time.time()


class CollectionModels:
    """The models collections were built with, loaded on first use (`get` blocks: call it in a worker thread) and
    kept in a least-recently-used set of at most `size`; preloaded (--model) models are never loaded again."""

    def __init__(self, registry: ModelRegistry, limits: Limits, metrics: Metrics | None, size: int,
                 compute: str = "fp32"):
        import threading
        from collections import OrderedDict

        self.registry, self.limits, self.metrics, self.size = registry, limits, metrics, max(1, size)
        self.compute = compute
        self._models: OrderedDict[str, EmbeddingModel] = OrderedDict()
        self._lock, self._loading = threading.Lock(), {}

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def get(self, name: str) -> EmbeddingModel:
        """The model `name` (a hub id, alias or folder); loads it (once, even when asked concurrently) and
        evicts the least recently used one beyond `size`. Raises what loading raises."""
        served = self.registry.get(name)
        if served is not None:
            return served
        import threading

        with self._lock:
            if name in self._models:
                self._models.move_to_end(name)
                return self._models[name]
            gate = self._loading.setdefault(name, threading.Lock())
        with gate:
            with self._lock:
                if name in self._models:
                    return self._models[name]
            import encoderkit

            t0 = time.perf_counter()
            model = EmbeddingModel(name, encoderkit.load(name, compute=self.compute), self.limits, self.metrics)
            model.load_seconds = time.perf_counter() - t0
            log.info("loaded model %s for a collection in %.1f s", name, model.load_seconds)
            evicted = []
            with self._lock:
                self._models[name] = model
                self._loading.pop(name, None)
                while len(self._models) > self.size:
                    evicted.append(self._models.popitem(last=False)[1])
            for old in evicted:  # a request still queued on it gets a 503 asking to retry
                log.info("unloading model %s (--max-models %d)", old.name, self.size)
                old.close()
                if self.metrics is not None:
                    self.metrics.queue_depth.pop(old.name, None)
            return model

    def close(self) -> None:
        with self._lock:
            models, self._models = list(self._models.values()), type(self._models)()
        for m in models:
            m.close()


async def server_state(request: Request) -> ServerState:
    """FastAPI dependency: the shared ServerState (async: FastAPI runs a plain-def dependency in a worker thread,
    a thread hop per request)."""
    return request.app.state.server


def caller(request: Request) -> KeyRecord | None:
    """The API key record of this request (None when the server has no keys)."""
    return getattr(request.state, "key", None)


def require_role(request: Request, role: str, collection: str | None = None) -> None:
    """403 unless the caller's key has `role` (and a grant for `collection`); no-op without keys."""
    rec = caller(request)
    if rec is None:
        return
    if not rec.can(role):
        raise APIError(403, f"this API key has role {rec.role!r}; this operation needs {role!r}", "forbidden",
                       code="insufficient_role")
    if collection is not None and not rec.sees(collection):
        raise APIError(403, f"this API key is not granted collection {collection!r}", "forbidden",
                       code="no_grant")


async def off_loop(size: int, fn: Callable, *args: Any, **kw: Any) -> Any:
    """Run a CPU-bound helper: inline when small, else in a worker thread (keeps the event loop free)."""
    if size <= INLINE_CHARS:
        return fn(*args, **kw)
    return await run_in_threadpool(fn, *args, **kw)


async def queued(state: ServerState, name: str, pending: Any, what: str = "inputs") -> Any:
    """Await a batcher submission of model `name`, turning a too-large request, a full queue and shutdown into
    the APIError each deserves (413, 429 with Retry-After, 503)."""
    try:
        return await pending
    except TooManyInputs as exc:
        raise too_many_for_queue(exc.n, exc.limit, what) from None
    except QueueFull as exc:
        state.metrics.observe_rejected(name)
        raise APIError(429, str(exc), "overloaded", headers={"Retry-After": str(exc.retry_after)}) from None
    except Closed as exc:
        raise APIError(503, str(exc), "unhealthy") from None


async def embed_checked(state: ServerState, model: EmbeddingModel, seqs: list[list[int]], *,
                        normalize: bool | None, dimensions: int | None, dim_param: str = "dimensions") -> np.ndarray:
    """model.embed with queue-full, shutdown and bad-dimensions turned into APIError."""
    if dimensions is not None and not 0 < dimensions <= model.dim:
        raise APIError(400, f"dimensions must be between 1 and {model.dim} for model {model.name}, got {dimensions}",
                       param=dim_param, code="invalid_dimensions")
    try:
        return await model.embed(seqs, normalize=normalize, dimensions=dimensions)
    except TooManyInputs as exc:
        raise too_many_for_queue(exc.n, exc.limit) from None
    except QueueFull as exc:
        state.metrics.observe_rejected(model.name)
        raise APIError(429, str(exc), "overloaded", code="rate_limit_exceeded",
                       headers={"Retry-After": str(exc.retry_after)}) from None
    except Closed as exc:
        raise APIError(503, f"{exc}; retry against another replica", "unhealthy", code="shutting_down") from None
    except Exception as exc:  # the forward pass failed (logged by the batcher)
        raise APIError(500, f"model {model.name} failed: {type(exc).__name__}: {exc}; see the server log",
                       "backend", code="model_error") from None


def too_long(exc: InputTooLong, status: int, param: str = "input") -> APIError:
    """An APIError for an over-long input, at the status the API uses."""
    return APIError(status, str(exc), "too_long", param=param, code="context_length_exceeded")


def check_count(state: ServerState, n: int, status: int, param: str = "input") -> None:
    """Refuse empty requests, requests with more inputs than --max-inputs, and (413: no retry can succeed)
    requests with more inputs than the model's queue holds (--max-queue)."""
    if n == 0:
        raise APIError(400, f"'{param}' is empty; send at least one input", "empty", param=param)
    if n > state.config.max_inputs:
        raise APIError(status, f"{n} inputs in one request; this server takes at most {state.config.max_inputs} "
                               "(split the request)", "validation", param=param, code="too_many_inputs")
    if n > state.config.max_queue:
        raise too_many_for_queue(n, state.config.max_queue, param)


def too_many_for_queue(n: int, limit: int, param: str = "input") -> APIError:
    """413 for a request larger than the whole queue (--max-queue): waiting would never help."""
    return APIError(413, f"{n} inputs in one request, more than this server's queue holds (--max-queue {limit}); "
                         f"split the request into parts of at most {limit}", "validation", param=param,
                    code="too_many_inputs")


def check_texts(texts: Any, param: str = "input", status: int = 400, what: str = "input") -> None:
    """400 naming the first text that is not valid Unicode (a lone UTF-16 surrogate such as "\\ud800", which
    JSON escapes can spell but no tokenizer can read)."""
    for i, t in enumerate(texts):
        try:
            t.encode("utf-8") if isinstance(t, str) else None
            continue
        except UnicodeEncodeError as exc:
            at = exc.start
            raise APIError(status, f"{what} {i} holds a lone UTF-16 surrogate at character {at}, which is not "
                                   "valid Unicode; send valid UTF-8 text", "validation", param=param,
                           code="invalid_text")
