"""2-D maps of an embedding space: UMAP (the default when `umap-learn` is installed: neighbourhoods stay
together, so topics show as islands) or PCA (exact, deterministic, the fallback). A fitted `Projection` also
places new vectors (a query) on the same map; a `CollectionMap` carries the map's clusters and their keywords."""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

METHODS = ("pca", "umap")
UMAP_EPOCHS = 200  # umap-learn runs 500 below 10,000 points; on 2,600 SciFact abstracts 200 keep 36.7% of each
# point's 15 nearest neighbours on the map, 500 keep 38.0% (PCA: 4.8%)
DENSE_LIMIT = 4096  # up to this many points the cosine distances are one matrix product (64 MB at the limit)
SAME_VECTOR = 1e-4  # cosine distance under which a new vector is taken for a stored one (re-embedding noise)
UMAP_MISSING = "UMAP is not installed (pip install umap-learn), so this is a PCA map"


def umap_available() -> bool:
    """True when the optional `umap-learn` package can be imported."""
    try:
        import umap  # noqa: F401
    except Exception:  # ImportError, or numba failing to initialise
        return False
    return True


@dataclass
class Projection:
    """A fitted map from D-dimensional vectors to 2-D points."""
    method: str
    mean: np.ndarray  # (D,) centre of the fitted vectors
    components: np.ndarray | None = None  # (2, D) PCA axes, unit length
    explained_variance: list[float] = field(default_factory=list)  # share of the variance per PCA axis
    model: Any = None  # the fitted umap.UMAP
    fitted: np.ndarray | None = None  # (n, D) unit-length vectors UMAP was fitted on
    points: np.ndarray | None = None  # (n, 2) their places on the map

    def transform(self, X: np.ndarray) -> np.ndarray:
        """2-D coordinates of the rows of X, shape (n, 2)."""
        X = _as_matrix(X, self.mean.shape[0])
        if self.method == "pca":
            return ((X - self.mean) @ self.components.T).astype(np.float32)  # (n, 2)
        return place_by_neighbours(X, self.fitted, self.points)


def place_by_neighbours(X: np.ndarray, fitted: np.ndarray, points: np.ndarray, k: int = 15) -> np.ndarray:
    """New vectors on a UMAP map: the mean place of their k nearest fitted vectors (cosine), weighted by
    exp(-(d - d_nearest) / spread), which is where umap-learn's own transform starts before refining; exact,
    instant and stable, where `UMAP.transform` re-runs a numba-compiled optimisation per call."""
    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    d = 1.0 - Xn @ fitted.T  # (n, N) cosine distances
    k = min(k, d.shape[1])
    near = np.argsort(d, axis=1, kind="stable")[:, :k]  # (n, k)
    dk = np.take_along_axis(d, near, axis=1)
    spread = np.maximum(dk.mean(axis=1, keepdims=True) - dk[:, :1], 1e-6)
    w = np.exp(-(dk - dk[:, :1]) / spread)  # (n, k), 1 for the nearest
    out = (w[:, :, None] * points[near]).sum(1) / w.sum(1, keepdims=True)  # (n, 2)
    same = dk[:, 0] < SAME_VECTOR  # a stored document's own vector: its own point
    out[same] = points[near[same, 0]]
    return out.astype(np.float32)


def _as_matrix(X: Any, dim: int | None = None) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array (n, dim), got shape {X.shape}")
    if dim is not None and X.shape[1] != dim:
        raise ValueError(f"vectors have {X.shape[1]} dimensions; this projection was fitted on {dim}")
    if not np.isfinite(X).all():
        raise ValueError("vectors contain NaN or infinity")
    return X


def fit_pca(X: np.ndarray) -> Projection:
    """The two principal axes of X (centred SVD); each axis' sign is fixed so its largest loading is positive,
    so the same data always gives the same picture."""
    X = _as_matrix(X)
    n, d = X.shape
    if n == 0:
        raise ValueError("cannot project an empty collection; add documents first")
    mean = X.mean(axis=0)
    Xc = X - mean  # (n, D)
    _, s, Vt = np.linalg.svd(Xc, full_matrices=False)  # Vt: (min(n, D), D)
    comps = np.zeros((2, d))
    comps[: min(2, len(Vt))] = Vt[:2]
    for i in range(len(comps)):
        j = int(np.argmax(np.abs(comps[i])))
        if comps[i, j] < 0:
            comps[i] = -comps[i]
    var = s ** 2
    total = float(var.sum())
    explained = [float(v / total) if total > 0 else 0.0 for v in var[:2]]
    explained += [0.0] * (2 - len(explained))
    return Projection("pca", mean, comps, explained)


_KERNELS_CACHED = False


def cache_umap_kernels() -> None:
    """Turn on numba's on-disk cache for umap-learn's compiled kernels (once per process). umap-learn caches only a
    few of them, so every new process (each `encoderkit serve`, each `encoderkit map`) compiled the rest again
    before its first map: ~9 s of CPU for 15 points. Cached, a later process loads them in 0.05 s, with the same
    map. A kernel numba cannot cache (or an unwritable cache folder) stays compiled per process, as before."""
    global _KERNELS_CACHED
    if _KERNELS_CACHED:
        return
    _KERNELS_CACHED = True
    try:
        import umap.distances
        import umap.layouts
        import umap.spectral
        import umap.umap_
        import umap.utils
        from numba.core.registry import CPUDispatcher
    except Exception:  # noqa: BLE001 - another umap-learn / numba layout: nothing to tune
        return
    for mod in (umap.umap_, umap.layouts, umap.utils, umap.spectral, umap.distances):
        for kernel in list(vars(mod).values()):
            if isinstance(kernel, CPUDispatcher):
                try:
                    kernel.enable_caching()
                except Exception:  # noqa: BLE001 - this kernel is compiled per process, as umap-learn has it
                    log.debug("numba cannot cache %s", getattr(kernel, "__name__", kernel))


def fit_umap(X: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> Projection:
    """UMAP (cosine metric) fitted on X; needs `pip install umap-learn`."""
    if not umap_available():
        raise RuntimeError("UMAP needs the optional package umap-learn: pip install umap-learn "
                           "(or use method='pca')")
    import umap

    cache_umap_kernels()
    X = _as_matrix(X)
    if len(X) < 4:
        raise ValueError(f"UMAP needs at least 4 vectors, got {len(X)}; use method='pca'")
    unit = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    # umap-learn computes a small set's distances pair by pair through Python (95% of a 2,600-point fit);
    # the same cosine distances as one matrix product, given as "precomputed", take milliseconds
    dense = len(X) <= DENSE_LIMIT
    model = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(X) - 1), random_state=seed,
                      metric="precomputed" if dense else "cosine", n_epochs=UMAP_EPOCHS, low_memory=True)
    with warnings.catch_warnings():  # the seed overrides n_jobs, and no inverse_transform: both as meant
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        warnings.filterwarnings("ignore", message="using precomputed metric", category=UserWarning)
        model.fit(cosine_distances(unit) if dense else X)
    return Projection("umap", X.mean(axis=0), model=model, fitted=unit,
                      points=np.asarray(model.embedding_, dtype=np.float32))


def cosine_distances(unit: np.ndarray) -> np.ndarray:
    """1 - cosine similarity of unit-length rows, (n, n) float32, clipped at 0 with an exact zero diagonal."""
    D = 1.0 - (unit @ unit.T).astype(np.float32)  # (n, n)
    np.clip(D, 0.0, 2.0, out=D)
    np.fill_diagonal(D, 0.0)
    return D


def resolve_method(method: str, n: int) -> tuple[str, str | None]:
    """The method 'auto' means for n vectors (UMAP when installed and n >= 4, else PCA) and a one-line note
    saying why when that is not UMAP."""
    if method != "auto":
        return method, None
    if not umap_available():
        return "pca", UMAP_MISSING
    if n < 4:
        return "pca", f"UMAP needs at least 4 documents ({n} here), so this is a PCA map"
    return "umap", None


def fit_projection(X: np.ndarray, method: str = "pca", seed: int = 0) -> Projection:
    """Fit a 2-D projection: method 'pca', 'umap', or 'auto' (UMAP when installed, else PCA)."""
    method, _ = resolve_method(method, len(X))
    if method == "pca":
        return fit_pca(X)
    if method == "umap":
        return fit_umap(X, seed=seed)
    raise ValueError(f"unknown projection method {method!r}; choose one of {', '.join(METHODS)} or 'auto'")


def sample_indices(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """Indices of at most `limit` of n items (all when n <= limit), sorted, chosen by a seeded RNG."""
    if limit is None or n <= limit:
        return np.arange(n)
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


@dataclass
class CollectionMap:
    """A collection (or a seeded sample of it) placed on a 2-D map."""
    ids: list[str]
    coords: np.ndarray  # (n, 2)
    texts: list[str]
    metadatas: list[dict]
    projection: Projection
    total: int  # documents in the collection (len(ids) is smaller when sampled)
    clusters: np.ndarray | None = None  # (n,) cluster of each point, -1 for none
    topics: list = field(default_factory=list)  # encoderkit.tasks.clusters.Cluster per cluster id
    note: str | None = None  # why the map is not what was asked (UMAP missing: PCA)
    seconds: float = 0.0  # time to project and cluster


def map_collection(coll: Any, limit: int | None = 2000, method: str = "auto", seed: int = 0,
                   clusters: bool = True) -> CollectionMap:
    """Project a Collection's stored vectors to 2-D (at most `limit` documents, a seeded sample beyond that),
    and with `clusters` find its topics and their keywords."""
    import time

    from encoderkit.tasks.clusters import describe_clusters, find_clusters

    t0 = time.perf_counter()
    ids, X = coll.vectors()
    total = len(ids)
    if total == 0:
        raise ValueError(f"collection {getattr(coll, 'path', '')} is empty; add documents before drawing its map")
    keep = sample_indices(total, limit, seed)
    ids = [ids[i] for i in keep]
    X = X[keep]
    method, note = resolve_method(method, len(ids))
    proj = fit_projection(X, method, seed=seed)
    coords = fitted_coords(proj, X)
    docs = coll.get(ids)
    texts = [d.text if d is not None else "" for d in docs]
    metas = [d.metadata if d is not None else {} for d in docs]
    labels, topics = None, []
    if clusters:
        labels = find_clusters(coords, X, proj.method, seed)
        topics = describe_clusters(texts, labels)
    seconds = time.perf_counter() - t0
    log.debug("mapped %d of %d documents with %s in %.2f s", len(ids), total, proj.method, seconds)
    return CollectionMap(ids, coords, texts, metas, proj, total, labels, topics, note, seconds)


def fitted_coords(proj: Projection, X: np.ndarray) -> np.ndarray:
    """The 2-D points of the vectors a projection was fitted on (UMAP's own embedding: no second pass)."""
    if proj.method == "umap":
        return proj.points
    return proj.transform(X)
