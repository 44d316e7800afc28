"""The Text Embeddings Inference API: POST /embed, /embed_sparse, /embed_all, /rerank, /predict, /similarity,
/tokenize, /decode; GET /info, GET /health."""
from __future__ import annotations

from typing import Literal, Union

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

import encoderkit
from encoderkit.serve.errors import APIError, TEIError, error_responses
from encoderkit.serve.models import InputTooLong
from encoderkit.serve.state import (ServerState, check_count, check_texts, embed_checked, off_loop, queued,
                                    server_state)

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
    compute: str | None = None  # encoderkit: the default model's compute mode (fp32, onnx, openvino, ...)
    compute_engine: str | None = None  # encoderkit: what runs its forward passes (torch, onnxruntime, openvino)
    compute_lanes: str | None = None  # encoderkit: how many batches of the default model run at once, and how


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
    scores = await queued(state, r.name, r.scores(body.query, body.texts, cost, raw=body.raw_scores), "texts")
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
    engine = m.encoder.info() if m is not None else {}
    if m is not None:
        model_id, max_len = m.name, m.max_length
        pooling = "splade" if getattr(m.encoder, "sparse", None) is not None else m.encoder.pooling  # as TEI says
        model_type: dict = {"embedding": {"pooling": pooling}}
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
            "rerank_models": [e.name for e in state.registry.rerankers],
            "compute": engine.get("compute"), "compute_engine": engine.get("compute_engine"),
            "compute_lanes": _lanes_text(m) if m is not None else None}


def _lanes_text(m) -> str:
    """How the default model's batches run: "1 thread lane", "2 process lanes", ..."""
    n = m.batcher.lanes
    return f"{n} {m.lane_kind} lane{'s' if n != 1 else ''}"


@router.get("/health", response_class=Response, summary="Health (TEI): 200 when models are loaded",
            responses={200: {"description": "healthy", "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def health(state: ServerState = Depends(server_state)) -> Response:
    if not state.registry.embedders and not state.registry.rerankers:
        raise APIError(503, "no model loaded", "unhealthy")
    return Response(status_code=200, media_type="text/plain")


# ------------------------------------------------------------------ TEI's other routes
class EmbedSparseRequest(BaseModel):
    """TEI's /embed_sparse and /embed_all body."""
    model_config = ConfigDict(extra="allow")
    inputs: Union[str, list[str]]
    truncate: bool | None = None
    truncation_direction: Direction = "Right"
    prompt_name: str | None = None
    model: str | None = None


class SparseValue(BaseModel):
    index: int
    value: float


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    inputs: Union[str, list[str]]
    add_special_tokens: bool = True
    prompt_name: str | None = None
    model: str | None = None


class SimpleToken(BaseModel):
    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


class DecodeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    ids: Union[list[int], list[list[int]]]
    skip_special_tokens: bool = True
    model: str | None = None


class SimilarityInputs(BaseModel):
    source_sentence: str
    sentences: list[str]


class SimilarityRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    inputs: SimilarityInputs
    truncate: bool | None = None
    truncation_direction: Direction = "Right"
    prompt_name: str | None = None
    model: str | None = None


class PredictRequest(BaseModel):
    """TEI's /predict body: one text, one [text, text_pair], or a list of texts / pairs (a batch)."""
    model_config = ConfigDict(extra="allow")
    inputs: Union[str, list[Union[str, list[str]]]]
    truncate: bool | None = None
    truncation_direction: Direction = "Right"
    raw_scores: bool = False
    model: str | None = None


class Prediction(BaseModel):
    score: float
    label: str


def _embedder(state: ServerState, name: str | None):
    m = state.registry.get(name)
    if m is None:
        raise APIError(404 if name else 424, f"model {name!r} is not served here" if name
                       else "this server has no embedding model", "not_found" if name else "backend")
    return m


async def _prepared(state: ServerState, m, texts: list[str], truncate: bool | None, direction: str,
                    prompt_name: str | None, param: str = "inputs"):
    if not texts:
        raise APIError(400, f"`{param}` cannot be empty", "empty")
    check_count(state, len(texts), 413, param)
    check_texts(texts, param)
    try:
        return await off_loop(sum(map(len, texts)), m.prepare_texts, texts, truncate=_truncate(state, truncate),
                              direction=direction.lower(), prompt_name=prompt_name)
    except InputTooLong as exc:
        raise APIError(413, f"Input validation error: `{param}` must have less than {exc.limit} tokens. "
                            f"Given: {exc.length} (input {exc.index}); shorten it or send truncate=true", "too_long") from None
    except ValueError as exc:
        raise APIError(422, str(exc), "tokenizer") from None


def _model_failed(m, exc: Exception) -> APIError:
    return APIError(500, f"model {m.name} failed: {type(exc).__name__}: {exc}; see the server log", "backend")


def _sparse_rows(m, texts: list[str], seqs: list, direction: str, prompt_name: str | None):
    """The model's sparse vectors (scipy CSR) for texts already checked by prepare_texts; a text the left
    truncation cut is encoded from the tokens it kept."""
    enc = m.encoder
    if direction.lower() == "left":
        full = m._free_tok.encode_batch([m.prompt_prefix(prompt_name) + t for t in texts])
        cut = [i for i, (e, s) in enumerate(zip(full, seqs)) if len(e.ids) != len(s)]
        if cut:
            texts = list(texts)
            for i in cut:
                texts[i] = enc.tokenizer.decode(list(seqs[i]), skip_special_tokens=True)
            prompt_name = None if len(cut) == len(texts) else prompt_name
    return enc.encode(texts, output="sparse", prompt_name=prompt_name, truncate=True)


@router.post("/embed_sparse", response_model=list[list[SparseValue]], summary="Sparse embeddings (TEI)")
async def embed_sparse(body: EmbedSparseRequest, state: ServerState = Depends(server_state)) -> JSONResponse:
    m = _embedder(state, body.model)
    texts = [body.inputs] if isinstance(body.inputs, str) else list(body.inputs)
    seqs = await _prepared(state, m, texts, body.truncate, body.truncation_direction, body.prompt_name)
    try:
        X = await run_in_threadpool(_sparse_rows, m, texts, seqs, body.truncation_direction, body.prompt_name)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise APIError(424, f"model {m.name} has no sparse output (a SPLADE-style model is needed for "
                            f"/embed_sparse): {exc}", "backend") from None
    except Exception as exc:
        raise _model_failed(m, exc) from None
    if not hasattr(X, "tocsr"):
        raise APIError(424, f"model {m.name} has no sparse output; /embed_sparse needs a SPLADE-style model", "backend")
    X = X.tocsr()
    out = [[{"index": int(i), "value": float(v)} for i, v in zip(X.indices[a:b], X.data[a:b]) if v != 0]
           for a, b in zip(X.indptr[:-1], X.indptr[1:])]
    return JSONResponse(out)


def _token_vectors(m, seqs: list) -> list[list[list[float]]]:
    """Every token's last hidden state (special tokens included), as TEI's /embed_all returns them."""
    import torch

    enc = m.encoder
    out = []
    with torch.inference_mode():
        for s in seqs:
            ids = torch.tensor([list(s)], dtype=torch.long, device=enc.device)
            mask = torch.ones_like(ids)
            res = enc.model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
            hidden = res.last_hidden_state if hasattr(res, "last_hidden_state") else res
            if hidden.dim() != 3:
                raise ValueError("this model returns pooled vectors only")
            out.append(hidden[0].float().cpu().numpy().tolist())
    return out


@router.post("/embed_all", response_model=list[list[list[float]]], summary="Token embeddings (TEI)")
async def embed_all(body: EmbedSparseRequest, state: ServerState = Depends(server_state)) -> JSONResponse:
    m = _embedder(state, body.model)
    texts = [body.inputs] if isinstance(body.inputs, str) else list(body.inputs)
    seqs = await _prepared(state, m, texts, body.truncate, body.truncation_direction, body.prompt_name)
    try:
        return JSONResponse(await run_in_threadpool(_token_vectors, m, seqs))
    except ValueError as exc:
        raise APIError(424, f"model {m.name}: {exc}; /embed_all needs per-token outputs", "backend") from None
    except Exception as exc:
        raise _model_failed(m, exc) from None


@router.post("/tokenize", response_model=list[list[SimpleToken]], summary="Tokenize (TEI)")
async def tokenize(body: TokenizeRequest, state: ServerState = Depends(server_state)) -> JSONResponse:
    m = _embedder(state, body.model)
    texts = [body.inputs] if isinstance(body.inputs, str) else list(body.inputs)
    if not texts:
        raise APIError(400, "`inputs` cannot be empty", "empty")
    check_count(state, len(texts), 413, "inputs")
    check_texts(texts, "inputs")
    try:
        prefix = m.prompt_prefix(body.prompt_name)
    except ValueError as exc:
        raise APIError(422, str(exc), "tokenizer") from None
    full = [prefix + t for t in texts]
    encs = m._free_tok.encode_batch([t.lower() for t in full] if m.encoder.do_lower_case else full,
                                    add_special_tokens=body.add_special_tokens)
    out = []
    for text, e in zip(full, encs):
        toks = []
        for tid, tok, special, (a, b) in zip(e.ids, e.tokens, e.special_tokens_mask, e.offsets):
            if special:
                toks.append({"id": tid, "text": tok, "special": True, "start": None, "stop": None})
            else:
                toks.append({"id": tid, "text": text[a:b], "special": False, "start": a, "stop": b})
        out.append(toks)
    return JSONResponse(out)


@router.post("/decode", response_model=list[str], summary="Decode token ids (TEI)")
async def decode(body: DecodeRequest, state: ServerState = Depends(server_state)) -> JSONResponse:
    m = _embedder(state, body.model)
    seqs = [body.ids] if body.ids and isinstance(body.ids[0], int) else list(body.ids)
    if not seqs or all(isinstance(s, list) and not s for s in seqs):
        raise APIError(400, "`ids` cannot be empty", "empty")
    check_count(state, len(seqs), 413, "ids")
    for i, s in enumerate(seqs):
        bad = next((x for x in s if not 0 <= x < m.vocab_size), None)
        if bad is not None:
            raise APIError(422, f"ids {i}: token id {bad} is outside this model's vocabulary (0..{m.vocab_size - 1})",
                           "tokenizer")
    return JSONResponse(m._free_tok.decode_batch(seqs, skip_special_tokens=body.skip_special_tokens))


@router.post("/similarity", response_model=list[float], summary="Sentence similarity (TEI)")
async def similarity(body: SimilarityRequest, state: ServerState = Depends(server_state)) -> JSONResponse:
    m = _embedder(state, body.model)
    if not body.inputs.sentences:
        raise APIError(400, "`inputs.sentences` cannot be empty", "empty")
    texts = [body.inputs.source_sentence, *body.inputs.sentences]
    seqs = await _prepared(state, m, texts, body.truncate, body.truncation_direction, body.prompt_name)
    X = await embed_checked(state, m, seqs, normalize=True, dimensions=None)
    return JSONResponse([float(x) for x in X[1:] @ X[0]])


def _predict_items(inputs) -> tuple[bool, list]:
    """(one input?, texts or [text, pair] items) from TEI's predict inputs."""
    if isinstance(inputs, str):
        return True, [inputs]
    if len(inputs) == 2 and all(isinstance(x, str) for x in inputs):
        return True, [(inputs[0], inputs[1])]
    items = []
    for i, x in enumerate(inputs):
        if isinstance(x, str):
            items.append(x)
        elif len(x) == 1:
            items.append(x[0])
        elif len(x) == 2:
            items.append((x[0], x[1]))
        else:
            raise APIError(422, f"inputs {i} has {len(x)} texts; give a text or a [text, text_pair]", "validation")
    return False, items


@router.post("/predict", response_model=Union[list[Prediction], list[list[Prediction]]],
             summary="Sequence classification (TEI)")
async def predict(body: PredictRequest, state: ServerState = Depends(server_state)) -> JSONResponse:
    r = state.registry.get_reranker(body.model)
    if r is None:
        if body.model and state.registry.rerankers:
            raise APIError(404, f"classification model {body.model!r} is not served here", "not_found")
        raise APIError(424, "this server has no sequence-classification model; start it with --rerank-model", "backend")
    single, items = _predict_items(body.inputs)
    if not items:
        raise APIError(400, "`inputs` cannot be empty", "empty")
    check_count(state, len(items), 413, "inputs")
    check_texts([t for x in items for t in ([x] if isinstance(x, str) else x)], "inputs")
    if body.truncation_direction.lower() == "left":
        raise APIError(422, "/predict truncates from the right only (the classifier's tokenizer); send "
                            "truncation_direction=Right", "validation")
    encs = r.ce.tokenizer.encode_batch(items)
    if not _truncate(state, body.truncate):
        for i, e in enumerate(encs):
            if e.overflowing:
                n = len(e.ids) + sum(len(o.ids) for o in e.overflowing)
                raise APIError(413, f"Input validation error: `inputs` must have less than {r.max_length} tokens. "
                                    f"Given: {n} (input {i}); shorten it or send truncate=true", "too_long")
    z = np.stack(await queued(state, r.name, r.batcher.submit(items, cost=sum(len(e.ids) for e in encs))))  # (n, labels)
    if not body.raw_scores:
        if z.shape[1] == 1:
            z = 1.0 / (1.0 + np.exp(-z))
        else:
            e = np.exp(z - z.max(1, keepdims=True))
            z = e / e.sum(1, keepdims=True)
    id2label = r.ce.hf_config.get("id2label") or {}
    labels = [str(id2label.get(str(j), id2label.get(j, f"LABEL_{j}"))) for j in range(z.shape[1])]
    out = [[{"score": float(row[j]), "label": labels[j]} for j in np.argsort(-row, kind="stable")] for row in z]
    return JSONResponse(out[0] if single else out)
