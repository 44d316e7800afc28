"""Collections over HTTP: create / list / drop, add / upsert / delete documents, search (vector, keyword,
sparse, late, hybrid of any of these; `where` filters; optional cross-encoder rerank). Queries and documents are embedded through the
model's dynamic batcher; SQLite and FAISS (or PostgreSQL) work runs in worker threads. The store is a folder
(one sub-folder per collection) or a PostgreSQL database with pgvector (postgresql://user@host:port/db: one
table per collection)."""
from __future__ import annotations

import logging
import re
import shutil
import threading
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from encoderkit.serve.drain import WriteTracker
from encoderkit.serve.errors import APIError, TEIError, error_responses
from encoderkit.serve.models import EmbeddingModel, InputTooLong, ModelRegistry
from encoderkit.serve.state import ServerState, caller, check_texts, embed_checked, require_role, server_state

log = logging.getLogger(__name__)

router = APIRouter(tags=["Collections"], responses=error_responses(TEIError, 400, 401, 403, 404, 409, 413, 422, 429))

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")  # always fullmatch: `$` would let "abc\n" in


class CollectionManager:
    """The collections of one store, opened once and kept open: a folder (one sub-folder each) or a PostgreSQL
    database with pgvector (postgresql://user@host:port/db; collection NAME is its table encoderkit_NAME)."""

    def __init__(self, root: str | Path, registry: ModelRegistry | None = None):
        # as pg_store.is_pg_url, without importing psycopg for a folder store
        self.pg = isinstance(root, str) and root.startswith(("postgresql://", "postgres://"))
        if self.pg:
            from encoderkit.store.pg_store import check_database, redact

            self.url = root
            self.root = redact(root)  # for messages and logs: never the password
            try:
                check_database(root)  # a bad URL, an unreachable server, no database, no pgvector: fail at start
            except ConnectionError as exc:
                raise RuntimeError(f"--store: {exc}") from None
        else:
            self.root = Path(root).expanduser()
            self.root.mkdir(parents=True, exist_ok=True)
        self.registry = registry
        self.models: Any = None  # CollectionModels, made on first use (serve/state.py)
        self.writes = WriteTracker()  # writes finish and are answered even when shutdown cancels their request
        self._open: dict[str, Any] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        from encoderkit.store.collection import DB_NAME

        if self.pg:
            from encoderkit.store.pg_store import list_collections

            return list_collections(self.url)
        return sorted(p.name for p in self.root.iterdir() if (p / DB_NAME).is_file() and NAME.fullmatch(p.name))

    def _path(self, name: str) -> Path | str:
        """The collection's folder, or its postgresql://...?collection=NAME URL; 422 for a name the store refuses."""
        if not NAME.fullmatch(name) or ".." in name:
            raise APIError(422, f"bad collection name {name!r}: use letters, digits, '_', '-', '.' (at most 128)",
                           "validation", param="name")
        if self.pg:
            from encoderkit.store.pg_store import check_name, collection_url

            try:
                check_name(name)
            except ValueError as exc:
                raise APIError(422, str(exc), "validation", param="name") from None
            return collection_url(self.url, name)
        return self.root / name

    def _exists(self, path: Path | str) -> bool:
        from encoderkit.store.collection import DB_NAME

        if self.pg:
            from encoderkit.store.pg_store import PgStore

            store = PgStore(path)
            try:
                return "model" in store.meta()
            finally:
                store.close()
        return (path / DB_NAME).is_file()

    def get(self, name: str) -> Any:
        """The open collection `name`; 404 when it does not exist."""
        from encoderkit.store.collection import Collection

        path = self._path(name)
        with self._lock:
            coll = self._open.get(name)
            if coll is not None and self.pg and not coll.store.usable():  # the database restarted: reconnect
                log.warning("connection of collection %r to %s was lost; reconnecting", name, self.root)
                self._open.pop(name, None)
                try:
                    coll.close()
                except Exception:  # already broken
                    pass
                coll = None
            if coll is not None:
                return coll
            try:
                coll = Collection.open(path, encoder=None, create=False)
            except FileNotFoundError:
                raise APIError(404, f"collection {name!r} does not exist; POST /collections creates it",
                               "not_found") from None
            self._open[name] = coll
            return coll

    def create(self, name: str, model: EmbeddingModel, index: str, metric: str, kinds: list[str] | None = None,
               late_index: str | None = None) -> Any:
        from encoderkit.store.collection import Collection

        path = self._path(name)
        with self._lock:
            if self._exists(path):
                raise APIError(409, f"collection {name!r} already exists; DELETE it first or pick another name",
                               "conflict")
            existed = not self.pg and Path(path).exists()  # a folder of the user's own is never removed
            try:
                coll = Collection.open(path, encoder=model.encoder, index=index, metric=metric, kinds=kinds,
                                       late_index=late_index)
            except ValueError as exc:
                if not self.pg and not existed:  # both backends check before creating; this is a safety net
                    shutil.rmtree(path, ignore_errors=True)
                raise APIError(422, str(exc), "validation") from None
            self._open[name] = coll
            return coll

    def drop(self, name: str) -> None:
        path = self._path(name)
        with self._lock:
            coll = self._open.pop(name, None)
            if coll is not None:
                coll.close()
            if not self.pg:
                if not self._exists(path):
                    raise APIError(404, f"collection {name!r} does not exist", "not_found")
                shutil.rmtree(path)
                return
            from encoderkit.store.pg_store import PgStore

            store = PgStore(path)
            try:
                if not store.drop():  # only a recorded collection's table and meta rows go
                    raise APIError(404, f"collection {name!r} does not exist", "not_found")
            finally:
                store.close()

    def model_for(self, coll: Any, state: ServerState | None = None) -> EmbeddingModel:
        """The model a collection was built with: a preloaded (--model) one, else (given the server `state`)
        loaded on first use into a bounded LRU (--max-models). Blocks while loading: call in a worker thread.
        424 when it cannot be had."""
        m = self.registry.get(coll.model)
        if m is not None:
            return m
        name = coll.store.name if self.pg else coll.path.name
        if state is None:
            raise APIError(424, f"collection {name!r} was built with model {coll.model!r}, which this server "
                                "does not serve; restart it with --model " + coll.model, "backend")
        with self._lock:
            if self.models is None:
                from encoderkit.serve.state import CollectionModels

                self.models = CollectionModels(self.registry, state.config.limits, state.metrics,
                                               state.config.max_models, state.config.compute)
        try:
            return self.models.get(coll.model)
        except Exception as exc:
            log.warning("cannot load model %r of collection %r: %s", coll.model, name, exc)
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise APIError(424, f"collection {name!r} was built with model {coll.model!r}, which cannot be loaded "
                                f"here ({detail}); make the model available or restart with --model MODEL",
                           "backend") from None

    def close(self) -> None:
        with self._lock:
            for coll in self._open.values():
                try:
                    coll.close()
                except Exception:  # a broken database connection must not stop the others closing
                    log.exception("closing collection %s failed", coll.path)
            self._open.clear()
        if self.models is not None:
            self.models.close()


def store_error(exc: BaseException) -> APIError:
    """The APIError for a failure of the collection store's database (unreachable, connection lost, a driver
    error): 503, so a client retries later or elsewhere."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return APIError(503, f"the collection store is unavailable: {detail}", "unhealthy", code="store_unavailable")


# ------------------------------------------------------------------ schemas
class CreateRequest(BaseModel):
    name: str = Field(description="letters, digits, '_', '-', '.'")
    model: str | None = Field(None, description="a served model (default: the first)")
    index: str = Field("Flat", description="FAISS factory string: Flat, HNSW32, IVF1024,Flat ...")
    metric: Literal["cosine", "ip", "l2"] = "cosine"
    kinds: list[Literal["dense", "sparse", "late"]] | None = Field(
        None, description="what to hold beside dense vectors (default: every output the model has)")
    late_index: str | None = Field(
        None, description="what proposes late candidates: PLAID (embedded default), PLAID{K}, or a FAISS token "
                          "index, Flat (PostgreSQL default) or HNSW{m}")


class CollectionInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    model: str | None = Field(None, description="null only for a broken collection")
    dim: int | None = None
    metric: str | None = None
    index: str | None = None
    documents: int | None = Field(None, description="documents: the chunks of a split document count once")
    chunks: int | None = Field(None, description="stored rows: one per chunk (as many as documents when none is split)")
    broken: str | None = Field(None, description="in a listing: why this collection cannot be opened")
    kinds: list[str] | None = Field(None, description="dense, and sparse / late when it holds them")
    modes: list[str] | None = Field(None, description="the search modes it offers")


class CollectionList(BaseModel):
    collections: list[CollectionInfo]


class Document(BaseModel):
    id: str | None = None
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentsRequest(BaseModel):
    documents: list[Document]


class DocumentOut(BaseModel):
    id: str
    text: str
    metadata: dict[str, Any]


class IdsResponse(BaseModel):
    ids: list[str]


class DeleteRequest(BaseModel):
    ids: list[str] | None = None
    where: dict[str, Any] | None = None
    all: bool = Field(False, description="delete every document (alone: an empty `where` is refused)")


class DeleteResponse(BaseModel):
    deleted: int


class Dropped(BaseModel):
    dropped: str


ListName = Literal["vector", "keyword", "sparse", "late"]


class SearchRequest(BaseModel):
    query: str = Field(min_length=1)
    k: int = Field(10, ge=1, le=1000)
    mode: Literal["vector", "keyword", "sparse", "late", "hybrid"] = "vector"
    modes: list[ListName] | None = Field(None, description="hybrid: the lists to fuse (default: all it holds)")
    fusion: Literal["rrf", "weighted"] = "rrf"
    weights: dict[ListName, float] | None = Field(None, description="hybrid: a weight per fused list")
    alpha: float = Field(0.5, ge=0, le=1, description="weighted vector + keyword fusion: the vector weight")
    where: dict[str, Any] | None = None
    rerank: bool = False
    rerank_top: int = Field(50, ge=1, le=1000)
    rerank_weight: float = Field(1.0, ge=0, le=1, description="the cross-encoder's weight when its score is fused "
                                 "with the first-stage score, each z-normalized over the reranked hits (1: alone)")
    rerank_model: str | None = None
    group_by_document: bool = Field(True, description="a document split into chunks comes back once, as its id with "
                                                      "its best chunk's score and text; false: the chunks themselves")


class SearchHit(BaseModel):
    id: str = Field(description="the document's id (a chunk's id when group_by_document is false)")
    score: float | None = Field(description="what orders the hits: see `scores` and `score_names` for what to show")
    text: str = Field(description="the text, or the best chunk's text (the matching passage) of a grouped document")
    metadata: dict[str, Any]
    scores: dict[str, float] = Field(description="per list and stage: vector, keyword, sparse, late, fused, rerank")
    chunk_id: str | None = Field(None, description="a grouped document: the id of the chunk it shows")
    matched_chunks: int = Field(1, description="a grouped document: how many of its chunks were candidates")


class SearchResponse(BaseModel):
    hits: list[SearchHit]
    score_names: dict[str, str] = Field(default_factory=dict, description="what each key of `scores` measures: "
                                        "cosine (or dot product) for vector, BM25 for keyword, the fusion for fused")
    explanation: str | None = Field(None, description="when there are no hits: why (an empty collection, a filter "
                                                       "on an unknown field or with a value of the wrong type, ...)")


# ------------------------------------------------------------------ routes
def _manager(state: ServerState) -> CollectionManager:
    if state.collections is None:
        raise APIError(404, "this server has no collection store; start it with --store DIR or "
                            "--store postgresql://user@host:port/db", "not_found")
    return state.collections


def _info(name: str, coll: Any) -> dict:
    return {"name": name, "model": coll.model, "dim": coll.dim, "metric": coll.metric, "index": coll.factory,
            **dict(zip(("documents", "chunks"), coll.document_counts())), "kinds": list(coll.kinds),
            "modes": coll.modes()}


async def _call(fn, *args, **kw):
    """Run a store operation in a worker thread; its ValueError/TypeError become 422."""
    try:
        return await run_in_threadpool(fn, *args, **kw)
    except (ValueError, TypeError) as exc:
        raise APIError(422, str(exc), "validation") from None


@router.post("/collections", response_model=CollectionInfo, status_code=201, summary="Create a collection")
async def create(body: CreateRequest, request: Request, state: ServerState = Depends(server_state)) -> dict:
    require_role(request, "admin", body.name)
    mgr = _manager(state)
    model = state.registry.get(body.model)
    if model is None:
        raise APIError(404, f"model {body.model!r} is not served here", "not_found", param="model")
    coll = await mgr.writes.run(mgr.create, body.name, model, body.index, body.metric, body.kinds, body.late_index)
    return await run_in_threadpool(_info, body.name, coll)


@router.get("/collections", response_model=CollectionList, summary="List the collections this key may see")
async def list_collections(request: Request, state: ServerState = Depends(server_state)) -> dict:
    mgr = _manager(state)
    rec = caller(request)
    names = [n for n in mgr.names() if rec is None or rec.sees(n)]
    out = []
    for n in names:  # one broken collection is listed as broken; it never hides the others
        try:
            out.append(await run_in_threadpool(_info, n, mgr.get(n)))
        except APIError as exc:
            if exc.status == 404:  # dropped since it was listed
                continue
            out.append({"name": n, "broken": exc.message})
        except Exception as exc:
            log.warning("collection %r cannot be opened: %s", n, exc)
            out.append({"name": n, "broken": f"cannot be opened: {' '.join(str(exc).split()) or type(exc).__name__}"})
    return {"collections": out}


@router.get("/collections/{name}", response_model=CollectionInfo, summary="Describe a collection")
async def describe(name: str, request: Request, state: ServerState = Depends(server_state)) -> dict:
    require_role(request, "read", name)
    coll = _manager(state).get(name)
    return await run_in_threadpool(_info, name, coll)


@router.delete("/collections/{name}", response_model=Dropped, summary="Drop a collection and its files")
async def drop(name: str, request: Request, state: ServerState = Depends(server_state)) -> dict:
    require_role(request, "admin", name)
    mgr = _manager(state)
    await mgr.writes.run(mgr.drop, name)  # finished and answered even if shutdown cancels the request
    return {"dropped": name}


async def _vectors(state: ServerState, mgr: CollectionManager, coll: Any, texts: list[str]):
    model = await run_in_threadpool(mgr.model_for, coll, state)
    try:
        seqs = await run_in_threadpool(model.prepare_texts, texts, truncate=True)
    except InputTooLong as exc:  # pragma: no cover - truncate=True
        raise APIError(413, str(exc), "too_long") from None
    return await embed_checked(state, model, seqs, normalize=coll.metric == "cosine", dimensions=None)


async def _other_kinds(state: ServerState, mgr: CollectionManager, coll: Any, texts: list[str], side: str,
                       which: tuple = ("sparse", "late")) -> dict:
    """Search / add keywords with the sparse and token vectors of texts, for a collection holding them."""
    from functools import partial

    from encoderkit.store.kinds import encode_multivector, encode_sparse

    out, wanted = {}, [k for k in which if k in coll.kinds]
    enc = (await run_in_threadpool(mgr.model_for, coll, state)).encoder if wanted else None
    for k in wanted:
        try:
            got = await run_in_threadpool(encode_sparse if k == "sparse" else partial(encode_multivector, plain=True),
                                          enc, texts, side)  # plain: a dense model's token vectors, as the collection holds
        except (ValueError, TypeError) as exc:
            raise APIError(500, f"model {coll.model} failed to give {k} vectors: {exc}", "backend") from None
        out["sparse" if k == "sparse" else "multivectors" if side == "document" else "multivector"] = \
            got if side == "document" or k == "sparse" else got[0]
    return out


async def _write(name: str, body: DocumentsRequest, request: Request, state: ServerState, replace: bool) -> dict:
    require_role(request, "write", name)
    mgr = _manager(state)
    coll = mgr.get(name)
    docs = body.documents
    if not docs:
        raise APIError(400, "`documents` is empty; send at least one", "empty")
    if len(docs) > state.config.max_inputs:
        raise APIError(413, f"{len(docs)} documents in one request; at most {state.config.max_inputs}", "validation")
    if replace and any(d.id is None for d in docs):
        raise APIError(422, "upsert needs an `id` on every document", "validation")
    texts = [d.text for d in docs]
    check_texts(texts, "documents", what="document")
    from encoderkit.store.validate import InvalidDocument, check_document

    try:  # the store checks again when writing; checking first saves embedding a batch that would be refused
        for i, d in enumerate(docs):
            check_document(d.id if d.id is not None else f"#{i}", d.text, d.metadata)
    except InvalidDocument as exc:
        raise APIError(400, str(exc), "validation", param="documents") from None
    X = await _vectors(state, mgr, coll, texts) if "dense" in coll.kinds else None
    extra = await _other_kinds(state, mgr, coll, texts, "document")
    ids = None if all(d.id is None for d in docs) else [d.id for d in docs]
    fn = coll.upsert if replace else coll.add
    try:
        out = await mgr.writes.run(fn, texts, ids=ids, metadatas=[d.metadata for d in docs], vectors=X, **extra)
    except InvalidDocument as exc:  # NaN, a 400-digit integer, ...: the client's data, refused before storing
        raise APIError(400, str(exc), "validation", param="documents") from None
    except ValueError as exc:
        conflict = "exist" in str(exc) or "duplicate" in str(exc).lower()
        raise APIError(409 if conflict else 422, str(exc), "conflict" if conflict else "validation") from None
    except TypeError as exc:
        raise APIError(422, str(exc), "validation") from None
    return {"ids": list(out)}


@router.post("/collections/{name}/documents", response_model=IdsResponse, summary="Add documents (new ids only)")
async def add(name: str, body: DocumentsRequest, request: Request, state: ServerState = Depends(server_state)) -> dict:
    return await _write(name, body, request, state, replace=False)


@router.put("/collections/{name}/documents", response_model=IdsResponse, summary="Insert or replace documents by id")
async def upsert(name: str, body: DocumentsRequest, request: Request,
                 state: ServerState = Depends(server_state)) -> dict:
    return await _write(name, body, request, state, replace=True)


@router.post("/collections/{name}/documents/delete", response_model=DeleteResponse,
             summary="Delete documents by id or metadata filter")
async def delete(name: str, body: DeleteRequest, request: Request, state: ServerState = Depends(server_state)) -> dict:
    require_role(request, "write", name)
    mgr = _manager(state)
    coll = mgr.get(name)
    from encoderkit.store.validate import check_delete

    try:  # nothing to select by, or a filter that selects everything without "all": true
        check_delete(body.ids, body.where, body.all, '"all": true')
    except ValueError as exc:
        raise APIError(400, str(exc), "validation", param="where") from None
    try:
        return {"deleted": await mgr.writes.run(coll.delete, body.ids, where=body.where, all=body.all)}
    except (ValueError, TypeError) as exc:
        raise APIError(422, str(exc), "validation") from None


@router.get("/collections/{name}/documents/{doc_id:path}", response_model=DocumentOut, summary="Fetch a document")
async def get_document(name: str, doc_id: str, request: Request, state: ServerState = Depends(server_state)) -> dict:
    require_role(request, "read", name)
    hit = await _call(_manager(state).get(name).get_document, doc_id)  # a chunked document: put back together
    if hit is None:
        raise APIError(404, f"no document {doc_id!r} in collection {name!r}", "not_found")
    return {"id": hit.id, "text": hit.text, "metadata": hit.metadata}


@router.post("/collections/{name}/search", response_model=SearchResponse, summary="Search a collection")
async def search(name: str, body: SearchRequest, request: Request, state: ServerState = Depends(server_state)) -> dict:
    require_role(request, "read", name)
    mgr = _manager(state)
    coll = mgr.get(name)
    reranker = None
    if body.rerank:
        reranker = state.registry.get_reranker(body.rerank_model)
        if reranker is None and body.rerank_model:  # as /rerank: a name the server does not serve is the client's
            raise APIError(404, f"rerank model {body.rerank_model!r} is not served here", "not_found",
                           param="rerank_model")
        if reranker is None:
            raise APIError(424, "rerank asked but this server has no rerank model; start it with --rerank-model",
                           "backend")
    check_texts([body.query], "query", what="query")
    if body.mode in ("keyword", "hybrid") and coll.meta.get("modality") == "image":
        raise APIError(422, f"{name!r} is an image collection: its only text is each file's name, so mode "
                            f"{body.mode!r} finds nothing; search it with mode 'vector'", "validation", param="mode")
    if body.mode == "hybrid":
        lists = body.modes or [m for m in coll.modes() if m != "hybrid"]
    else:
        lists = [body.mode]
    missing = [m for m in lists if m not in coll.modes()]
    if missing:
        raise APIError(422, f"collection {name!r} cannot search by {missing[0]} (it holds {', '.join(coll.kinds)} "
                            f"vectors); its modes: {', '.join(coll.modes())}", "validation", param="mode")
    vector = None
    if "vector" in lists:
        vector = (await _vectors(state, mgr, coll, [body.query]))[0]
    extra = await _other_kinds(state, mgr, coll, [body.query], "query", tuple(m for m in lists if m in ("sparse", "late")))
    depth = max(body.k, body.rerank_top) if reranker is not None else body.k
    hits = await _call(coll.search, body.query, depth, mode=body.mode, where=body.where, vector=vector,
                       modes=body.modes, fusion=body.fusion, weights=body.weights, alpha=body.alpha,
                       group_by_document=body.group_by_document, **extra)
    if reranker is not None and hits:
        hits = hits[: body.rerank_top]
        passages = [h.text for h in hits]
        cost = await run_in_threadpool(reranker.count_tokens, body.query, passages, True)
        try:
            scores = await reranker.scores(body.query, passages, cost)
        except Exception as exc:
            from encoderkit.serve.batcher import QueueFull, TooManyInputs

            if isinstance(exc, TooManyInputs):
                raise APIError(413, f"{exc} (--max-queue); lower rerank_top", "validation") from None
            if isinstance(exc, QueueFull):
                raise APIError(429, str(exc), "overloaded", headers={"Retry-After": str(exc.retry_after)}) from None
            raise
        from encoderkit.store.records import rerank_hits

        try:
            hits = rerank_hits(hits, [float(s) for s in scores], body.rerank_weight)
        except ValueError as exc:  # hits without a first-stage score to fuse
            raise APIError(422, str(exc), "validation", param="rerank_weight") from None
    if not hits:
        return {"hits": [], "explanation": await run_in_threadpool(_explain, name, coll, body.where, body.mode)}
    return {"hits": [h.to_dict() for h in hits[: body.k]], "score_names": coll.score_names(body.fusion)}


def _explain(name: str, coll: Any, where: Any, mode: str) -> str | None:
    """Why a search found nothing (tasks/explain.py), with how to fill an empty collection."""
    from encoderkit.tasks.explain import explain_empty

    return explain_empty(coll, where=where, mode=mode, add_hint=f"`encoderkit index add {name} FILE_OR_FOLDER` or "
                                                                f"POST /collections/{name}/documents")
