"""The web page of `encoderkit serve`: static files (served at `/` to browsers and under `/ui/`, without an
API key since they hold no data) and the JSON routes the page needs beyond the collection API: stats, the
2-D map of a collection, a query's place on that map, and "more like this". `mount_web(app)` adds both."""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from encoderkit.serve.collections_api import SearchResponse
from encoderkit.serve.errors import APIError, TEIError, error_responses
from encoderkit.serve.state import ServerState, embed_checked, require_role, server_state

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}
_SECURITY = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
             (b"x-frame-options", b"DENY"),
             (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; "
                                          b"style-src 'self'; script-src 'self'; connect-src 'self'; "
                                          b"frame-ancestors 'none'")]
SNIPPET = 240  # characters of text sent per map point
MAX_MAP_POINTS = 20000

router = APIRouter(tags=["Web page"], responses=error_responses(TEIError, 400, 401, 403, 404, 413, 422, 424, 429))


# ------------------------------------------------------------------ static files
def _load_static(folder: Path) -> dict[str, tuple[bytes, str]]:
    """Every file of the static folder, by URL path (/ui/NAME), read once."""
    if not (folder / "index.html").is_file():
        raise FileNotFoundError(f"the web page files are missing from {folder}; reinstall encoderkit")
    files = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix in _TYPES:
            files[f"/ui/{p.name}"] = (p.read_bytes(), _TYPES[p.suffix])
    return files


class WebPageMiddleware:
    """Outermost ASGI layer: GET/HEAD `/` from a browser (Accept: text/html) gets the page, `/ui/*` its files;
    everything else (API clients asking `/` included) goes on to the app and its API-key check."""

    def __init__(self, app: Any, folder: Path = STATIC):
        self.app = app
        self.files = _load_static(folder)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") in ("GET", "HEAD"):
            path = scope["path"]
            if path == "/":
                accept = dict(scope.get("headers", [])).get(b"accept", b"")
                if b"text/html" in accept:
                    return await self._send(scope, send, *self.files["/ui/index.html"])
            elif path.startswith("/ui/"):
                found = self.files.get(path)
                if found is None:
                    body = f"no file {path} in the web page; the page is at /".encode()
                    return await self._send(scope, send, body, "text/plain; charset=utf-8", 404)
                return await self._send(scope, send, *found)
        await self.app(scope, receive, send)

    @staticmethod
    async def _send(scope: dict, send: Any, body: bytes, ctype: str, status: int = 200) -> None:
        headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode()),
                   (b"cache-control", b"no-cache"), *_SECURITY]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def mount_web(app: Any, folder: Path = STATIC) -> None:
    """Add the page and its routes to an encoderkit app; call after the app's own middleware is added, so the
    page's static files are served before the API-key check (the data routes still need a key). Idempotent."""
    if getattr(app.state, "web_mounted", False):
        return
    app.state.web_mounted = True
    app.include_router(router)
    app.add_middleware(WebPageMiddleware, folder=folder)


# ------------------------------------------------------------------ schemas
class FieldSummary(BaseModel):
    type: str = Field(description="number, string, boolean or mixed")
    count: int = Field(description="documents of the sample that have this field")
    values: list[Any] = Field(default_factory=list, description="its most frequent values (strings, booleans)")
    min: float | None = None
    max: float | None = None


class Stats(BaseModel):
    name: str
    model: str
    dim: int
    metric: str
    index: str
    documents: int = Field(description="documents: the chunks of a split document count once")
    chunks: int = Field(0, description="stored rows, one per chunk")
    bytes: int
    generation: int
    updated: str | None = Field(None, description="last write, ISO 8601 UTC")
    fields: dict[str, FieldSummary] = Field(default_factory=dict, description="metadata fields, from the map sample")
    sampled: int = Field(0, description="documents the field summary was computed from")
    rerank_models: list[str] = Field(default_factory=list)
    projection_methods: list[str] = Field(default_factory=list)
    modality: str = Field("text", description="what the vectors embed: text, or image (then only vector search "
                                              "finds anything: an image's only text is its file name)")
    modes: list[str] = Field(default_factory=lambda: ["vector", "keyword", "hybrid"],
                             description="the search modes the collection offers (sparse / late when it holds them)")


class MapPoint(BaseModel):
    id: str
    x: float
    y: float
    text: str
    metadata: dict[str, Any]
    cluster: int = Field(-1, description="index into `clusters`, or -1 for a point in no cluster")


class MapCluster(BaseModel):
    id: int
    size: int = Field(description="points of the map in this cluster")
    keywords: list[str] = Field(description="its top words by c-TF-IDF (frequent here, rare in other clusters)")
    label: str = Field(description="the first three keywords, what the map writes on the cluster")


class MapResponse(BaseModel):
    method: str = Field(description="umap or pca")
    explained_variance: list[float] = Field(description="share of the variance per PCA axis (empty for UMAP)")
    total: int
    points: list[MapPoint]
    clusters: list[MapCluster] = Field(default_factory=list, description="topics found on the map (HDBSCAN on "
                                       "a UMAP map, k-means for PCA), biggest first")
    note: str | None = Field(None, description="why the map is not the one asked for (e.g. UMAP not installed)")
    seconds: float = Field(0.0, description="time the projection and clustering took (cached until a write)")


class LocateRequest(BaseModel):
    query: str | None = Field(None, min_length=1, description="text to place on the map")
    id: str | None = Field(None, min_length=1, description="or a document id")
    limit: int = Field(2000, ge=1, le=MAX_MAP_POINTS)
    method: Literal["auto", "pca", "umap"] = "auto"


class Location(BaseModel):
    x: float
    y: float


class SimilarRequest(BaseModel):
    id: str = Field(min_length=1, description="the example document (a document split into chunks: its id)")
    k: int = Field(10, ge=1, le=1000)
    where: dict[str, Any] | None = None
    group_by_document: bool = Field(True, description="documents once each (false: chunks); never the example's own")


SimilarResponse = SearchResponse  # "more like this" answers exactly like a search


# ------------------------------------------------------------------ helpers
class _MapCache:
    """Fitted maps by (collection, generation, limit, method, clusters): a map is recomputed only after a write."""

    def __init__(self, size: int = 8):
        self.size, self._items, self._lock = size, OrderedDict(), threading.Lock()
        self._building: dict[tuple, threading.Lock] = {}

    def get(self, coll: Any, generation: int, limit: int, method: str, clusters: bool = True) -> Any:
        from encoderkit.tasks.projection import map_collection

        key = (str(coll.path), (getattr(coll, "meta", None) or {}).get("uid"), generation, limit, method, clusters)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            build_lock = self._building.setdefault(key, threading.Lock())
        with build_lock:  # one build per key even when the page asks twice at once
            with self._lock:
                if key in self._items:
                    return self._items[key]
            t0 = time.perf_counter()
            cmap = map_collection(coll, limit=limit, method=method, clusters=clusters)
            log.info("map of %s: %d of %d documents by %s in %.2f s", _label(coll), len(cmap.ids), cmap.total,
                     cmap.projection.method, time.perf_counter() - t0)
            with self._lock:
                self._items[key] = cmap
                self._building.pop(key, None)
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
            return cmap


_maps = _MapCache()


def _collection(state: ServerState, request: Request, name: str) -> tuple[Any, Any]:
    require_role(request, "read", name)
    if state.collections is None:
        raise APIError(404, "this server has no collection store; start it with --store DIR", "not_found")
    return state.collections, state.collections.get(name)


def _generation(coll: Any) -> int:
    return int(coll.info()["generation"])


def _label(coll: Any) -> str:
    """The collection's name for messages: its folder's name, or a PostgreSQL collection's name."""
    return coll.path.name if isinstance(coll.path, Path) else coll.store.name


def _updated(coll: Any) -> str | None:
    """When the embedded store's data last changed: the database file, and its write-ahead log when that holds
    writes (None for a PostgreSQL collection: the server keeps no per-table modification time). Not the -shm
    index nor an empty -wal: SQLite makes those when a connection opens, so they tell when the server opened the
    collection (issue 17), not when it changed."""
    if not isinstance(coll.path, Path):
        return None
    times = []
    for name in ("collection.db", "collection.db-wal"):
        try:
            st = (coll.path / name).stat()
        except FileNotFoundError:
            continue
        if name == "collection.db" or st.st_size > 0:
            times.append(st.st_mtime)
    if not times:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(max(times)))


def _short(value: Any, n: int = 200) -> Any:
    if isinstance(value, str) and len(value) > n and not value.startswith(("data:image/", "http://", "https://")):
        return value[:n] + "…"
    if isinstance(value, dict):
        return {k: _short(v, n) for k, v in value.items()}
    return value


def summarize_fields(metadatas: list[dict], top: int = 20) -> dict[str, dict]:
    """Per metadata field (nested keys joined by '.'): its type, how many documents have it, and its most
    frequent values (strings and booleans) or its range (numbers) — what the page's filter and colour menus offer."""
    from collections import Counter

    seen: dict[str, list] = {}

    def walk(d: dict, prefix: str = "") -> None:
        for k, v in d.items():
            if isinstance(v, dict) and v and not prefix:
                walk(v, f"{k}.")
            elif v is not None and not isinstance(v, (list, dict)):
                seen.setdefault(prefix + k, []).append(v)

    for m in metadatas:
        walk(m or {})
    out = {}
    for name, vals in sorted(seen.items()):
        kinds = {"boolean" if isinstance(v, bool) else "number" if isinstance(v, (int, float)) else "string"
                 for v in vals}
        kind = kinds.pop() if len(kinds) == 1 else "mixed"
        info: dict[str, Any] = {"type": kind, "count": len(vals), "values": []}
        if kind == "number":
            info["min"], info["max"] = float(min(vals)), float(max(vals))
        short = [v for v in vals if not isinstance(v, str) or len(v) <= 60]
        if kind != "number" and short:
            info["values"] = [v for v, _ in Counter(short).most_common(top)]
        out[name] = info
    return out


async def _embed_query(state: ServerState, mgr: Any, coll: Any, text: str):
    model = await run_in_threadpool(mgr.model_for, coll, state)
    seqs = await run_in_threadpool(model.prepare_texts, [text], truncate=True)
    return (await embed_checked(state, model, seqs, normalize=coll.metric == "cosine", dimensions=None))[0]


async def _map(coll: Any, limit: int, method: str, clusters: bool = True) -> Any:
    from encoderkit.tasks.projection import umap_available

    if method == "umap" and not umap_available():
        raise APIError(422, "UMAP is not installed on this server (pip install umap-learn); use method=pca",
                       "validation", param="method")
    if await run_in_threadpool(coll.count) == 0:
        raise APIError(422, f"collection {_label(coll)!r} is empty: add documents before drawing its map", "empty")
    gen = await run_in_threadpool(_generation, coll)
    try:
        return await run_in_threadpool(_maps.get, coll, gen, limit, method, clusters)
    except ValueError as exc:
        raise APIError(422, str(exc), "validation") from None


# ------------------------------------------------------------------ routes
@router.get("/collections/{name}/stats", response_model=Stats, summary="Collection stats for the web page")
async def stats(name: str, request: Request, state: ServerState = Depends(server_state)) -> dict:
    from encoderkit.tasks.projection import umap_available

    _, coll = _collection(state, request, name)
    info = await run_in_threadpool(coll.info)
    out = {"name": name, "model": info["model"], "dim": info["dim"], "metric": info["metric"], "index": info["index"],
           "documents": info["documents"], "chunks": info.get("chunks", info["documents"]), "bytes": info["bytes"],
           "generation": info["generation"],
           "updated": await run_in_threadpool(_updated, coll), "fields": {}, "sampled": 0,
           "rerank_models": [m.name for m in state.registry.rerankers],
           "projection_methods": ["pca", "umap"] if umap_available() else ["pca"],
           "modality": (getattr(coll, "meta", None) or {}).get("modality") or "text",
           "modes": coll.modes() if hasattr(coll, "modes") else ["vector", "keyword", "hybrid"]}
    if out["modality"] == "image":  # an image's only text is its file name: keyword and hybrid find nothing
        out["modes"] = [m for m in out["modes"] if m not in ("keyword", "hybrid")]
    if info["documents"]:
        cmap = await _map(coll, 2000, "pca", clusters=False)  # the field summary needs no UMAP
        out["fields"] = await run_in_threadpool(summarize_fields, cmap.metadatas)
        out["sampled"] = len(cmap.ids)
    return out


@router.get("/collections/{name}/map", response_model=MapResponse, summary="A 2-D map of a collection's vectors")
async def collection_map(name: str, request: Request, limit: int = Query(2000, ge=1, le=MAX_MAP_POINTS),
                         method: Literal["auto", "pca", "umap"] = Query(
                             "auto", description="auto: UMAP when umap-learn is installed, else PCA (see `note`)"),
                         state: ServerState = Depends(server_state)) -> dict:
    _, coll = _collection(state, request, name)
    cmap = await _map(coll, limit, method)
    labels = cmap.clusters.tolist() if cmap.clusters is not None else [-1] * len(cmap.ids)
    points = [{"id": i, "x": float(x), "y": float(y), "text": t[:SNIPPET], "metadata": _short(m), "cluster": c}
              for i, (x, y), t, m, c in zip(cmap.ids, cmap.coords.tolist(), cmap.texts, cmap.metadatas, labels)]
    return {"method": cmap.projection.method, "explained_variance": cmap.projection.explained_variance,
            "total": cmap.total, "points": points, "clusters": [c.to_dict() for c in cmap.topics],
            "note": cmap.note, "seconds": round(cmap.seconds, 2)}


@router.post("/collections/{name}/map/locate", response_model=Location,
             summary="Where a query (or a document) falls on the collection's map")
async def locate(name: str, body: LocateRequest, request: Request, state: ServerState = Depends(server_state)) -> dict:
    mgr, coll = _collection(state, request, name)
    if (body.query is None) == (body.id is None):
        raise APIError(422, "give exactly one of `query` (text) or `id` (a document)", "validation")
    v = None
    if body.id is not None:  # a stored document (or one split into chunks: the mean of its chunks) by its vector
        try:
            v = await run_in_threadpool(coll.document_vector, body.id)
        except ValueError as exc:
            raise APIError(422, str(exc), "validation") from None
        if v is None:
            raise APIError(404, f"no document {body.id!r} in collection {name!r}", "not_found")
    cmap = await _map(coll, body.limit, body.method)
    if v is None:
        v = await _embed_query(state, mgr, coll, body.query)
    x, y = (await run_in_threadpool(cmap.projection.transform, v))[0].tolist()
    return {"x": float(x), "y": float(y)}


@router.post("/collections/{name}/similar", response_model=SimilarResponse,
             summary="More like this: documents nearest to a stored document")
async def similar(name: str, body: SimilarRequest, request: Request,
                  state: ServerState = Depends(server_state)) -> dict:
    _, coll = _collection(state, request, name)
    try:  # from the document's stored vectors (its chunks' mean), without its own chunks
        hits = await run_in_threadpool(coll.similar, body.id, body.k, body.where, body.group_by_document)
    except KeyError:
        raise APIError(404, f"no document {body.id!r} in collection {name!r}", "not_found") from None
    except (ValueError, TypeError) as exc:
        raise APIError(422, str(exc), "validation") from None
    return {"hits": [h.to_dict() for h in hits], "score_names": coll.score_names()}
