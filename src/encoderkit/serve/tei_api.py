"""The Text Embeddings Inference API: POST /embed, POST /rerank, GET /info, GET /health."""
from __future__ import annotations

from typing import Literal, Union

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

import encoderkit
from encoderkit.serve.batcher import Closed, QueueFull, TooManyInputs
from encoderkit.serve.errors import APIError, TEIError, error_responses
from encoderkit.serve.models import InputTooLong
from encoderkit.serve.state import (ServerState, check_count, check_texts, embed_checked, off_loop, server_state,
                                    too_many_for_queue)

router = APIRouter(tags=["TEI"], responses=error_responses(TEIError, 400, 401, 404, 413, 422, 424, 429, 503))

Direction = Literal["Left", "Right", "left", "right"]


class EmbedRequest(BaseModel):
    """TEI's /embed body (`model` is an encoderkit extension: which served model; default the first)."""
    model_config = ConfigDict(extra="allow")
    inputs: Union[str, list[str]]
    normalize: bool = True
    truncate: bool | None = None
    truncation_direction: Direction = "Right"
    prompt_name: str | None = None
    dimensions: int | None = Field(None, ge=1)
    model: str | None = None


class RerankRequest(BaseModel):
    """TEI's /rerank body (`model` picks one of several --rerank-model; default the first)."""
    model_config = ConfigDict(extra="allow")
    query: str
    texts: list[str]
    truncate: bool | None = None
    truncation_direction: Direction = "Right"
    raw_scores: bool = False
    return_text: bool = False
    model: str | None = None


class Rank(BaseModel):
    index: int
    score: float
    text: str | None = None


class Info(BaseModel):
    model_id: str
    model_sha: str | None
    model_dtype: str
    model_type: dict
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    sha: str | None = None
    docker_label: str | None = None
    models: list[str] = []
    rerank_models: list[str] = []


def _truncate(state: ServerState, value: bool | None) -> bool:
    return state.config.auto_truncate if value is None else value


@router.post("/embed", response_model=list[list[float]], summary="Embed (TEI)")
async def embed(body: EmbedRequest, state: ServerState = Depends(server_state)) -> JSONResponse:
    m = state.registry.get(body.model)
    if m is None:
        raise APIError(404 if body.model else 424, f"model {body.model!r} is not served here" if body.model
                       else "this server has no embedding model", "not_found" if body.model else "backend")
    texts = [body.inputs] if isinstance(body.inputs, str) else list(body.inputs)
    if not texts:
        raise APIError(400, "`inputs` cannot be empty", "empty")
    check_count(state, len(texts), 413, "inputs")
    check_texts(texts, "inputs")
    try:
        seqs = await off_loop(sum(map(len, texts)), m.prepare_texts, texts, truncate=_truncate(state, body.truncate),
                              direction=body.truncation_direction.lower(), prompt_name=body.prompt_name)
    except InputTooLong as exc:
        raise APIError(413, f"Input validation error: `inputs` must have less than {exc.limit} tokens. "
                            f"Given: {exc.length} (input {exc.index}); shorten it or send truncate=true", "too_long") from None
    except ValueError as exc:
        raise APIError(422, str(exc), "tokenizer") from None
    if body.dimensions is not None and body.dimensions > m.dim:
        raise APIError(422, f"dimensions must be between 1 and {m.dim} for this model, got {body.dimensions}",
                       "validation")
    vecs = await embed_checked(state, m, seqs, normalize=body.normalize, dimensions=body.dimensions)
    return JSONResponse(vecs.tolist())


@router.post("/rerank", response_model=list[Rank], response_model_exclude_none=True, summary="Rerank texts (TEI)")
async def rerank(body: RerankRequest, state: ServerState = Depends(server_state)) -> JSONResponse:
    r = state.registry.get_reranker(body.model)
    if r is None:
        if body.model and state.registry.rerankers:
            raise APIError(404, f"rerank model {body.model!r} is not served here", "not_found")
        raise APIError(424, "this server has no rerank model; start it with --rerank-model", "backend")
    if not body.texts:
        raise APIError(400, "`texts` cannot be empty", "empty")
    check_count(state, len(body.texts), 413, "texts")
    check_texts([body.query], "query", what="query")
    check_texts(body.texts, "texts")
    try:
        cost = await off_loop(len(body.query) * len(body.texts) + sum(map(len, body.texts)), r.count_tokens,
                              body.query, body.texts, _truncate(state, body.truncate))
    except InputTooLong as exc:
        raise APIError(413, f"Input validation error: {exc}", "too_long") from None
    try:
        scores = await r.scores(body.query, body.texts, cost, raw=body.raw_scores)
    except TooManyInputs as exc:
        raise too_many_for_queue(exc.n, exc.limit, "texts") from None
    except QueueFull as exc:
        state.metrics.observe_rejected(r.name)
        raise APIError(429, str(exc), "overloaded", headers={"Retry-After": str(exc.retry_after)}) from None
    except Closed as exc:
        raise APIError(503, str(exc), "unhealthy") from None
    order = np.argsort(-scores, kind="stable")
    out = []
    for i in order:
        item = {"index": int(i), "score": float(scores[i])}
        if body.return_text:
            item["text"] = body.texts[i]
        out.append(item)
    return JSONResponse(out)


@router.get("/info", response_model=Info, summary="Model and server information (TEI)")
async def info(state: ServerState = Depends(server_state)) -> dict:
    cfg = state.config
    m = state.registry.get(None)
    r = state.registry.get_reranker(None)
    if m is not None:
        model_id, max_len = m.name, m.max_length
        model_type: dict = {"embedding": {"pooling": m.encoder.pooling}}
    elif r is not None:
        model_id, max_len = r.name, r.max_length
        labels = r.ce.hf_config.get("id2label") or {"0": "LABEL_0"}
        model_type = {"reranker": {"id2label": {str(k): str(v) for k, v in labels.items()},
                                   "label2id": {str(v): int(k) for k, v in labels.items()}}}
    else:
        raise APIError(424, "this server has no model loaded", "backend")
    return {"model_id": model_id, "model_sha": None, "model_dtype": "float32", "model_type": model_type,
            "max_concurrent_requests": cfg.max_queue, "max_input_length": max_len,
            "max_batch_tokens": cfg.max_batch_tokens, "max_batch_requests": None if cfg.batching else 1,
            "max_client_batch_size": cfg.max_inputs, "auto_truncate": cfg.auto_truncate,
            "tokenization_workers": 1, "version": encoderkit.__version__,
            "models": [e.name for e in state.registry.embedders],
            "rerank_models": [e.name for e in state.registry.rerankers]}


@router.get("/health", response_class=Response, summary="Health (TEI): 200 when models are loaded",
            responses={200: {"description": "healthy", "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def health(state: ServerState = Depends(server_state)) -> Response:
    if not state.registry.embedders and not state.registry.rerankers:
        raise APIError(503, "no model loaded", "unhealthy")
    return Response(status_code=200, media_type="text/plain")
