"""The Ollama embedding API: POST /api/embed, legacy POST /api/embeddings, GET /api/tags, GET /api/version."""
from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone
from typing import Any, Union

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

import encoderkit
from encoderkit.serve.errors import APIError, OllamaError, error_responses
from encoderkit.serve.models import EmbeddingModel, InputTooLong
from encoderkit.serve.state import ServerState, check_count, check_texts, embed_checked, off_loop, server_state

router = APIRouter(tags=["Ollama"], responses=error_responses(OllamaError, 400, 401, 404, 413, 429, 503))


class EmbedRequest(BaseModel):
    """Ollama's /api/embed body."""
    model_config = ConfigDict(extra="allow")
    model: str
    input: Union[str, list[str]] = ""
    truncate: bool = True
    options: dict[str, Any] | None = None
    keep_alive: Union[str, float, None] = None
    dimensions: int | None = Field(None, ge=1)


class EmbedResponse(BaseModel):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class EmbeddingsRequest(BaseModel):
    """Ollama's legacy /api/embeddings body."""
    model_config = ConfigDict(extra="allow")
    model: str
    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: Union[str, float, None] = None


class EmbeddingsResponse(BaseModel):
    embedding: list[float]


class ModelDetails(BaseModel):
    parent_model: str
    format: str
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str


class TagModel(BaseModel):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails


class Tags(BaseModel):
    models: list[TagModel]


class Version(BaseModel):
    version: str


def _model(state: ServerState, name: str) -> EmbeddingModel:
    if not name:
        raise APIError(400, "model is required; GET /api/tags lists the models this server has")
    m = state.registry.get(name)
    if m is None:
        raise APIError(404, f'model "{name}" not found, try pulling it first (this server has: '
                            f'{", ".join(e.ollama_name for e in state.registry.embedders)})', "not_found")
    return m


@router.post("/api/embed", response_model=EmbedResponse, summary="Embed (Ollama)")
async def embed(body: EmbedRequest, state: ServerState = Depends(server_state)) -> dict:
    t0 = time.perf_counter_ns()
    m = _model(state, body.model)
    if isinstance(body.input, str):
        texts = [body.input] if body.input else []  # Ollama answers an empty input with no embeddings
    else:
        texts = list(body.input)
    if texts:
        check_count(state, len(texts), 400)
        check_texts(texts)
    try:
        seqs = await off_loop(sum(map(len, texts)), m.prepare_texts, texts, truncate=body.truncate)
    except InputTooLong as exc:
        raise APIError(400, f"input length exceeds the context length: {exc}", "too_long") from None
    vecs = await embed_checked(state, m, seqs, normalize=True, dimensions=body.dimensions)
    return {"model": body.model, "embeddings": vecs.tolist(), "total_duration": time.perf_counter_ns() - t0,
            "load_duration": 0, "prompt_eval_count": sum(len(s) for s in seqs)}


@router.post("/api/embeddings", response_model=EmbeddingsResponse, summary="Embedding of one prompt (Ollama, legacy)")
async def embeddings(body: EmbeddingsRequest, state: ServerState = Depends(server_state)) -> dict:
    m = _model(state, body.model)
    if body.prompt == "":
        return {"embedding": []}
    check_texts([body.prompt], "prompt", what="prompt")
    try:
        seqs = await off_loop(len(body.prompt), m.prepare_texts, [body.prompt], truncate=True)
    except InputTooLong as exc:  # pragma: no cover - truncate=True never raises
        raise APIError(400, str(exc), "too_long") from None
    vecs = await embed_checked(state, m, seqs, normalize=None, dimensions=None)
    return {"embedding": vecs[0].tolist()}


def _tag(m: EmbeddingModel) -> dict:
    enc = m.encoder
    n = enc.num_parameters()
    family = str(getattr(enc.config, "model_type", "") or "bert")
    source = str(enc.source or m.name)
    return {"name": f"{m.ollama_name}:latest", "model": f"{m.ollama_name}:latest",
            "modified_at": datetime.fromtimestamp(m.loaded_at, timezone.utc).isoformat(),
            "size": int(n * 4), "digest": hashlib.sha256(source.encode()).hexdigest(),
            "details": {"parent_model": "", "format": "safetensors", "family": family, "families": [family],
                        "parameter_size": f"{n / 1e6:.1f}M", "quantization_level": "F32"}}


@router.get("/api/tags", response_model=Tags, summary="List models (Ollama)")
async def tags(state: ServerState = Depends(server_state)) -> dict:
    return {"models": [_tag(m) for m in state.registry.embedders]}


@router.get("/api/version", response_model=Version, summary="Server version (Ollama)")
async def version() -> dict:
    return {"version": encoderkit.__version__}
