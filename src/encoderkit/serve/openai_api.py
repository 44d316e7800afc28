"""The OpenAI embeddings API: POST /v1/embeddings, GET /v1/models[/{model}]."""
from __future__ import annotations

import base64
from typing import Literal, Union

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from encoderkit.serve.errors import APIError, OpenAIError, error_responses
from encoderkit.serve.models import InputTooLong
from encoderkit.serve.state import (ServerState, check_count, check_texts, embed_checked, off_loop, server_state,
                                    too_long)

router = APIRouter(tags=["OpenAI"], responses=error_responses(OpenAIError, 400, 401, 404, 413, 429, 503))


class EmbeddingRequest(BaseModel):
    """OpenAI's create-embeddings body."""
    model_config = ConfigDict(extra="allow")
    input: Union[str, list[str], list[int], list[list[int]]] = Field(
        description="a string, an array of strings, an array of token ids, or an array of token-id arrays")
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: Union[list[float], str]
    index: int


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


def _not_found(name: str) -> APIError:
    return APIError(404, f"The model `{name}` does not exist on this server; GET /v1/models lists the models it serves",
                    "not_found", param="model", code="model_not_found")


@router.post("/v1/embeddings", response_model=EmbeddingResponse, summary="Create embeddings (OpenAI)")
async def create_embeddings(body: EmbeddingRequest, request: Request,
                            state: ServerState = Depends(server_state)) -> JSONResponse:
    model = state.registry.get(body.model)
    if model is None:
        raise _not_found(body.model)
    inp = body.input
    token_input = isinstance(inp, list) and bool(inp) and not isinstance(inp[0], str)
    if isinstance(inp, str):
        inp = [inp]
    elif token_input and isinstance(inp[0], int):
        inp = [inp]
    check_count(state, len(inp), 400)
    if not token_input:
        check_texts(inp)
    if not token_input and any(t == "" for t in inp):
        raise APIError(400, "'input' contains an empty string; every input must have some text", param="input")
    if token_input and any(len(s) == 0 for s in inp):
        raise APIError(400, "'input' contains an empty token array", param="input")
    trunc = state.config.auto_truncate
    try:
        if token_input:
            seqs = await off_loop(sum(len(s) for s in inp) * 4, model.prepare_ids, inp, truncate=trunc)
        else:
            seqs = await off_loop(sum(len(t) for t in inp), model.prepare_texts, inp, truncate=trunc)
    except InputTooLong as exc:
        raise too_long(exc, 400) from None
    except ValueError as exc:
        raise APIError(400, str(exc), param="input") from None
    vecs = await embed_checked(state, model, seqs, normalize=None, dimensions=body.dimensions)
    if body.encoding_format == "base64":
        out = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vecs]
    else:
        out = vecs.tolist()
    n = sum(len(s) for s in seqs)
    return JSONResponse({"object": "list",
                         "data": [{"object": "embedding", "embedding": e, "index": i} for i, e in enumerate(out)],
                         "model": body.model, "usage": {"prompt_tokens": n, "total_tokens": n}})


def _model_entry(m, state: ServerState) -> dict:
    return {"id": m.name, "object": "model", "created": int(m.loaded_at), "owned_by": "encoderkit"}


@router.get("/v1/models", response_model=ModelList, summary="List models (OpenAI)")
async def list_models(state: ServerState = Depends(server_state)) -> dict:
    return {"object": "list", "data": [_model_entry(m, state) for m in state.registry.embedders]}


@router.get("/v1/models/{model:path}", response_model=Model, summary="Retrieve a model (OpenAI)")
async def get_model(model: str, state: ServerState = Depends(server_state)) -> dict:
    m = state.registry.get(model)
    if m is None:
        raise _not_found(model)
    return _model_entry(m, state) | {"id": model}
