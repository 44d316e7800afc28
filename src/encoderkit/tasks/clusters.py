"""Topics of a map: clusters of its 2-D points (HDBSCAN; k-means on the vectors for a PCA map, whose 2-D
picture is too flat to cluster) named by their top keywords with c-TF-IDF, as BERTopic does:

    weight(t, c) = tf(t, c) * log(1 + A / f(t))

tf(t, c): count of term t in cluster c's texts, A: mean number of words per cluster, f(t): count of t over
all clusters. Frequent in this cluster and rare elsewhere ranks first."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

NOISE = -1  # HDBSCAN's label for a point in no cluster
WORD = re.compile(r"[^\W\d_][^\W_]{2,}")  # a word of 3+ characters that starts with a letter
MAX_CLUSTERS = 20  # more than this many colours cannot be told apart
MIN_TOPICS = 3  # fewer clusters than this from HDBSCAN's default selection: try its leaf clusters


@dataclass
class Cluster:
    """One topic of the map: its number, size, top keywords and a short label built from them."""
    id: int
    size: int
    keywords: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return " · ".join(self.keywords[:3]) if self.keywords else f"cluster {self.id + 1}"

    def to_dict(self) -> dict:
        return {"id": self.id, "size": self.size, "keywords": self.keywords, "label": self.label}


def min_cluster_size(n: int) -> int:
    """HDBSCAN's smallest cluster for n points: 2% of them, at least 5 (about a dozen topics on a few thousand)."""
    return max(5, round(0.02 * n))


def hdbscan_labels(coords: np.ndarray) -> np.ndarray:
    """Cluster label per 2-D point (NOISE for points in no dense region); at most MAX_CLUSTERS clusters."""
    from sklearn.cluster import HDBSCAN

    size = min_cluster_size(len(coords))
    while True:
        labels = HDBSCAN(min_cluster_size=size, min_samples=min(size, 10), copy=True).fit_predict(coords)
        if labels.max() + 1 < MIN_TOPICS:
            # excess-of-mass selection can keep just the root split of a map whose dense regions are many: a
            # last-bit change in the vectors turned 13 clusters of 300 SciFact abstracts into 2. The leaves of the
            # same hierarchy are those regions (14-15 on every seed tried), so take them instead
            leaves = HDBSCAN(min_cluster_size=size, min_samples=min(size, 10), copy=True,
                             cluster_selection_method="leaf").fit_predict(coords)
            labels = leaves if leaves.max() > labels.max() else labels
        if labels.max() + 1 <= MAX_CLUSTERS:
            return labels
        size = int(size * 1.5) + 1


def kmeans_labels(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """k-means on the vectors themselves, k = sqrt(n / 2) clamped to [2, 12]; every point gets a cluster."""
    from sklearn.cluster import KMeans

    k = int(np.clip(round(np.sqrt(len(X) / 2)), 2, 12))
    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(np.asarray(X, dtype=np.float64))


def find_clusters(coords: np.ndarray, X: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """Labels 0..K-1 (NOISE for unclustered points) ordered by size, biggest first: HDBSCAN on a UMAP map's
    points, k-means on the vectors of a PCA map. Fewer than 10 points form no clusters (all NOISE)."""
    n = len(coords)
    if n < 10:
        return np.full(n, NOISE, dtype=np.int64)
    raw = hdbscan_labels(np.asarray(coords, dtype=np.float64)) if method == "umap" else kmeans_labels(X, seed)
    sizes = Counter(int(c) for c in raw if c != NOISE)
    order = {c: i for i, (c, _) in enumerate(sorted(sizes.items(), key=lambda t: (-t[1], t[0])))}
    return np.array([order.get(int(c), NOISE) for c in raw], dtype=np.int64)


def _stopwords() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return ENGLISH_STOP_WORDS


def words(text: str, stop: frozenset[str]) -> list[str]:
    """Lower-cased words of 3+ characters, stopwords and numbers left out."""
    return [w for w in (m.group(0).lower() for m in WORD.finditer(text)) if w not in stop]


def ctfidf_keywords(texts: list[str], labels: np.ndarray, top: int = 5) -> dict[int, list[str]]:
    """The `top` keywords of each cluster (NOISE excluded) by c-TF-IDF; a cluster whose texts have no word
    gets an empty list."""
    stop = _stopwords()
    tf: dict[int, Counter] = {}
    for text, c in zip(texts, labels):
        if c != NOISE:
            tf.setdefault(int(c), Counter()).update(words(text or "", stop))
    if not tf:
        return {}
    overall = Counter()
    for counts in tf.values():
        overall.update(counts)
    mean_words = sum(sum(c.values()) for c in tf.values()) / len(tf)  # A
    out = {}
    for c, counts in tf.items():
        scored = sorted(((n * np.log(1 + mean_words / overall[t]), t) for t, n in counts.items()),
                        key=lambda st: (-st[0], st[1]))
        out[c] = distinct([t for _, t in scored], top)
    return out


def distinct(ranked: list[str], top: int) -> list[str]:
    """The first `top` words, skipping a plural or singular of a word already taken ("cells" after "cell")."""
    taken: list[str] = []
    seen: set[str] = set()
    for w in ranked:
        base = w[:-1] if w.endswith("s") and len(w) > 3 else w
        if base in seen:
            continue
        seen.add(base)
        taken.append(w)
        if len(taken) == top:
            break
    return taken


def describe_clusters(texts: list[str], labels: np.ndarray, top: int = 5) -> list[Cluster]:
    """One Cluster per label 0..K-1, with its size and c-TF-IDF keywords."""
    keywords = ctfidf_keywords(texts, labels, top)
    sizes = Counter(int(c) for c in labels if c != NOISE)
    return [Cluster(c, sizes[c], keywords.get(c, [])) for c in sorted(sizes)]
