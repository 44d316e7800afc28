"""2-D maps of an embedding space: PCA (default, exact and deterministic) or UMAP when `umap-learn` is
installed. A fitted `Projection` also places new vectors (a query) on the same map."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

METHODS = ("pca", "umap")


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

    def transform(self, X: np.ndarray) -> np.ndarray:
        """2-D coordinates of the rows of X, shape (n, 2)."""
        X = _as_matrix(X, self.mean.shape[0])
        if self.method == "pca":
            return ((X - self.mean) @ self.components.T).astype(np.float32)  # (n, 2)
        return np.asarray(self.model.transform(X), dtype=np.float32)


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


def fit_umap(X: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> Projection:
    """UMAP (cosine metric) fitted on X; needs `pip install umap-learn`."""
    if not umap_available():
        raise RuntimeError("UMAP needs the optional package umap-learn: pip install umap-learn "
                           "(or use method='pca')")
    import umap

    X = _as_matrix(X)
    if len(X) < 4:
        raise ValueError(f"UMAP needs at least 4 vectors, got {len(X)}; use method='pca'")
    model = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(X) - 1), metric="cosine", random_state=seed)
    model.fit(X)
    return Projection("umap", X.mean(axis=0), model=model)


def fit_projection(X: np.ndarray, method: str = "pca", seed: int = 0) -> Projection:
    """Fit a 2-D projection: method 'pca' (default), 'umap', or 'auto' (UMAP when installed, else PCA)."""
    if method == "auto":
        method = "umap" if umap_available() and len(X) >= 4 else "pca"
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


def map_collection(coll: Any, limit: int | None = 2000, method: str = "pca", seed: int = 0) -> CollectionMap:
    """Project a Collection's stored vectors to 2-D (at most `limit` documents, a seeded sample beyond that)."""
    ids, X = coll.vectors()
    total = len(ids)
    if total == 0:
        raise ValueError(f"collection {getattr(coll, 'path', '')} is empty; add documents before drawing its map")
    keep = sample_indices(total, limit, seed)
    ids = [ids[i] for i in keep]
    X = X[keep]
    proj = fit_projection(X, method, seed=seed)
    coords = proj.transform(X)
    docs = coll.get(ids)
    texts = [d.text if d is not None else "" for d in docs]
    metas = [d.metadata if d is not None else {} for d in docs]
    log.debug("mapped %d of %d documents with %s", len(ids), total, proj.method)
    return CollectionMap(ids, coords, texts, metas, proj, total)
