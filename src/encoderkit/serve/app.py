"""The server: `create_app(config)` builds the FastAPI app (OpenAI, Ollama, TEI and collection routes,
/metrics, API keys, body-size limit, errors in each API's format); `run(config)` serves it with uvicorn."""
from __future__ import annotations

import asyncio
import ipaddress
import sys
import logging
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import encoderkit
from encoderkit.serve.auth import KeyStore, bearer_token
from encoderkit.serve.errors import APIError, api_of, error_response
from encoderkit.serve.metrics import Metrics
from encoderkit.serve.models import EmbeddingModel, ModelRegistry, RerankModel
from encoderkit.serve.state import ServeConfig, ServerState

log = logging.getLogger(__name__)


def load_models(config: ServeConfig, metrics: Metrics) -> ModelRegistry:
    """Load every --model and --rerank-model named in config."""
    registry = ModelRegistry()
    for name in config.models:
        t0 = time.perf_counter()
        m = EmbeddingModel(name, encoderkit.load(name, compute=config.compute), config.limits, metrics)
        m.load_seconds = time.perf_counter() - t0
        registry.add(m)
        log.info("serving %s (aliases: %s) on %s", name, ", ".join(m.aliases), m.encoder.info()["compute_engine"])
    for name in config.rerank_models:
        from encoderkit.tasks.rerank import CrossEncoder

        registry.add_reranker(RerankModel(name, CrossEncoder.load(name), config.limits, metrics))
        log.info("serving rerank model %s", name)
    return registry


class _BodyTooLarge(Exception):
    pass


class GuardMiddleware:
    """Outermost layer: request metrics, the body-size limit and API-key authentication for every route."""

    def __init__(self, app: Any, state: ServerState):
        self.app, self.state = app, state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = self.state
        t0 = time.perf_counter()
        status = {"code": 500, "started": False}

        async def send_wrapped(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        state.metrics.in_flight += 1
        try:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            limit = state.config.max_body_bytes
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                return await self._reject(scope, send_wrapped, APIError(
                    413, f"request body is {declared} bytes; this server takes at most {limit} (send fewer inputs "
                         "per request)", "validation", code="request_too_large"))
            if state.keys is not None:
                token = bearer_token(headers.get("authorization"))
                rec = state.keys.verify(token) if token else None
                if rec is None:
                    msg = ("missing API key: send the header 'Authorization: Bearer <key>'" if token is None
                           else "invalid API key (unknown or revoked); ask the operator for a key")
                    return await self._reject(scope, send_wrapped, APIError(
                        401, msg, "auth", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}))
                scope.setdefault("state", {})["key"] = rec
            scope = _as_json(scope, headers)
            if not declared and scope.get("method") in ("POST", "PUT", "PATCH"):
                # a chunked body has no Content-Length to check up front: read it up to the limit, no further
                body = await _read_limited(receive, limit)
                if body is None:
                    return await self._reject(scope, send_wrapped, APIError(
                        413, f"request body exceeds {limit} bytes; send fewer inputs per request", "validation",
                        code="request_too_large"))
                receive = _replay(body, receive)
            seen = 0

            async def receive_limited() -> dict:
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > limit:
                        raise _BodyTooLarge()
                return message

            try:
                await self.app(scope, receive_limited, send_wrapped)
            except _BodyTooLarge:
                if not status["started"]:
                    await self._reject(scope, send_wrapped, APIError(
                        413, f"request body exceeds {limit} bytes; send fewer inputs per request", "validation",
                        code="request_too_large"))
            except asyncio.CancelledError:  # shutdown outlasted --graceful-timeout: say so in the API's format
                if status["started"]:
                    raise
                log.warning("%s %s cancelled: the server is shutting down", scope.get("method"), scope.get("path"))
                await self._reject(scope, send_wrapped, shutting_down(state.config.graceful_timeout))
            except Exception as exc:  # answered here, so /metrics counts the status the client really got
                if status["started"]:
                    raise
                await self._reject(scope, send_wrapped, internal_error(exc, scope))
        finally:
            state.metrics.in_flight -= 1
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            state.metrics.observe_request(scope.get("method", ""), template, status["code"], time.perf_counter() - t0)

    @staticmethod
    async def _reject(scope: dict, send: Any, err: APIError) -> None:
        resp = error_response(scope["path"], err)
        await resp(scope, _empty_receive, send)


async def _empty_receive() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}


def _as_json(scope: dict, headers: dict[str, str]) -> dict:
    """Every API route takes a JSON body: read it as JSON whatever Content-Type the client sent (curl -d sends
    application/x-www-form-urlencoded), as Ollama, OpenAI and TEI servers do. Multipart bodies are left alone."""
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if scope.get("method") not in ("POST", "PUT", "PATCH") or ctype == "application/json" \
            or ctype.startswith("multipart/"):
        return scope
    raw = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-type"]
    return {**scope, "headers": raw + [(b"content-type", b"application/json")]}


async def _read_limited(receive: Any, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it exceeds `limit` bytes (nothing more is read)."""
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return b"".join(parts)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def _replay(body: bytes, receive: Any) -> Any:
    """A receive callable that yields `body` once, then defers to `receive` (for a disconnect)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay


def internal_error(exc: Exception, scope: dict) -> APIError:
    """The 500 (424 on TEI routes) for an exception no route handled; logged with its traceback."""
    log.error("unhandled %s on %s %s", type(exc).__name__, scope.get("method"), scope.get("path"), exc_info=exc)
    return APIError(500, f"internal error ({type(exc).__name__}); see the server log", "backend",
                    code="internal_error")


def shutting_down(graceful_timeout: float) -> APIError:
    """503 for a request cut off by shutdown: nothing it asked was done (a store write that had begun finished
    and answered normally), so retrying elsewhere or after the restart is safe."""
    return APIError(503, f"the server is shutting down and this request did not finish within the graceful timeout "
                         f"({graceful_timeout:g} s); nothing was done: retry against another replica or after the "
                         "restart", "unhealthy", code="shutting_down", headers={"Retry-After": "1"})


def _validation_error(request: Request, exc: RequestValidationError):
    errs = exc.errors()
    first = errs[0] if errs else {}
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    param = loc[0] if loc else None
    where = ".".join(loc) or "body"
    msg = f"invalid request: {where}: {first.get('msg', 'invalid value')}"
    if len(errs) > 1:
        msg += f" (and {len(errs) - 1} more problems)"
    api = api_of(request.url.path)
    status = 422 if api == "tei" else 400
    return error_response(request.url.path, APIError(status, msg, "validation", param=param))


def create_app(config: ServeConfig | None = None, registry: ModelRegistry | None = None,
               metrics: Metrics | None = None, collections: Any = None) -> FastAPI:
    """The ASGI app. Models are loaded from config unless a registry is given; `collections` is a
    CollectionManager (made from config.store when None: a folder, or a postgresql://user@host:port/db URL)."""
    config = config or ServeConfig()
    metrics = metrics or Metrics()
    keys = KeyStore(config.api_keys) if config.api_keys else None
    if keys is not None and len(keys) == 0:
        log.warning("API key file %s has no keys yet: every request will get 401 until `encoderkit keys add`",
                    config.api_keys)
    if collections is None and config.store:  # before the models load: a bad store fails fast
        from encoderkit.serve.collections_api import CollectionManager

        collections = CollectionManager(config.store)
    if registry is None:
        registry = load_models(config, metrics)
    if collections is not None and getattr(collections, "registry", None) is None:
        collections.registry = registry
    state = ServerState(config, registry, metrics, keys, collections)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        log.info("shutting down: finishing queued work")  # uvicorn has already drained in-flight requests
        if getattr(collections, "writes", None) is not None:  # writes that began finish and are answered
            await collections.writes.drain()
        registry.close()
        if collections is not None:
            collections.close()

    app = FastAPI(title="encoderkit", version=encoderkit.__version__, lifespan=lifespan,
                  description="Embeddings, reranking and search over the OpenAI, Ollama and TEI APIs.")
    app.state.server = state

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _validation_error(request, exc)

    async def _store_down(request: Request, exc: Exception):
        from encoderkit.serve.collections_api import store_error

        log.warning("collection store failure on %s %s: %s", request.method, request.url.path, exc)
        return error_response(request.url.path, store_error(exc))

    if getattr(collections, "pg", False):  # the database went away or failed mid-request: 503, not 500
        from encoderkit.store.pg_store import DriverError

        app.add_exception_handler(ConnectionError, _store_down)
        app.add_exception_handler(DriverError, _store_down)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return error_response(request.url.path, internal_error(exc, request.scope))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        kind = "not_found" if exc.status_code == 404 else "validation"
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            detail = f"no route {request.method} {request.url.path}; see /openapi.json for the routes"
        return error_response(request.url.path, APIError(exc.status_code, detail, kind,
                                                         headers=dict(exc.headers or {})))

    from encoderkit.serve import collections_api, ollama_api, openai_api, tei_api

    app.include_router(openai_api.router)
    app.include_router(ollama_api.router)
    app.include_router(tei_api.router)
    app.include_router(collections_api.router)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["Server"], summary="Prometheus metrics",
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "metrics"}})
    async def metrics_page() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=PlainTextResponse, tags=["Server"], summary="Liveness text (as Ollama's root)",
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "running"}})
    async def root() -> PlainTextResponse:
        return PlainTextResponse("encoderkit is running (OpenAI, Ollama and TEI APIs)")

    app.add_middleware(GuardMiddleware, state=state)
    from encoderkit.serve.web import mount_web  # the web page: after the guard, so its static files need no key

    mount_web(app)
    return app


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(config: ServeConfig) -> None:
    """Refuse to expose an unauthenticated server beyond this machine unless --insecure."""
    if not is_loopback(config.host) and not config.api_keys and not config.insecure:
        raise PermissionError(f"refusing to serve on {config.host} without API keys: anyone who can reach it could "
                              "use it. Pass --api-keys FILE (make keys with `encoderkit keys add`), bind 127.0.0.1, "
                              "or pass --insecure if that is really what you want")


def run(config: ServeConfig, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests finish (up to config.graceful_timeout seconds)."""
    import uvicorn

    check_bind(config)
    # The event loop and the batch worker share the GIL; a forward pass re-acquires it between torch ops, and
    # with the default 5 ms switch interval a busy event loop makes each re-acquisition wait (a convoy that
    # made batches ~10x slower under load). A short interval keeps the worker's waits short.
    sys.setswitchinterval(config.switch_interval)
    app = create_app(config)
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level,
                timeout_graceful_shutdown=config.graceful_timeout, access_log=log_level == "debug")
