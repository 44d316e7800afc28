"""Hard-negative mining: for each (query, positive) pair, the documents of a Collection that a search ranks high
for the query but that are not its positives, filtered against false negatives (the filters of
sentence-transformers' mine_hard_negatives):

- rank window [range_min, range_max): ranks are counted in the search's order with the query's positives left
  out (skip the very top, which often holds unlabelled positives; stop at range_max);
- absolute_margin m:  keep a candidate only if score(q, c) + m <= score(q, p)
- relative_margin r:  keep it only if score(q, c) <= score(q, p) - r * |score(q, p)|
- max_score / min_score: keep only candidates whose score(q, c) lies within them.
p is the query's hardest positive (its lowest score). The score is the cosine of the collection's encoder
(whatever the search mode: vector, keyword/BM25 or hybrid find the candidates), or a cross-encoder's."""
from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

FILTERS = ("range", "absolute_margin", "relative_margin", "max_score", "min_score")


@dataclass
class MiningStats:
    """What mining kept and dropped."""
    queries: int = 0
    pairs: int = 0
    written: int = 0
    short: int = 0  # pairs dropped: their query had fewer than num_negatives candidates left
    dropped: dict = field(default_factory=lambda: {f: 0 for f in FILTERS})

    def to_dict(self) -> dict:
        return {"queries": self.queries, "pairs": self.pairs, "written": self.written,
                "dropped_pairs_short_of_negatives": self.short, "candidates_dropped": dict(self.dropped)}


def _norm(text: str) -> str:
    return " ".join(text.split())


def _check_pairs(pairs: Sequence[Any]) -> list[dict]:
    """Pairs as dicts {query, positive, positive_id?}; tuples (query, positive[, positive_id]) accepted."""
    if not pairs:
        raise ValueError("no (query, positive) pairs to mine negatives for")
    out = []
    for i, p in enumerate(pairs):
        if isinstance(p, dict):
            q, pos, pid = p.get("query", p.get("anchor")), p.get("positive"), p.get("positive_id")
        elif isinstance(p, (tuple, list)) and len(p) in (2, 3):
            q, pos, pid = p[0], p[1], (p[2] if len(p) == 3 else None)
        else:
            raise ValueError(f"pair {i} must be (query, positive) or a dict with query and positive, got {p!r:.80}")
        if not isinstance(q, str) or not q.strip() or not isinstance(pos, str) or not pos.strip():
            raise ValueError(f"pair {i}: query and positive must be non-empty strings, got {q!r:.40} and {pos!r:.40}")
        out.append({"query": q, "positive": pos, "positive_id": None if pid is None else str(pid)})
    return out


def default_range_max(range_min: int, num_negatives: int, filtering: bool) -> int:
    """sentence-transformers' default: room for 10x the negatives when filters may drop candidates."""
    return range_min + num_negatives * (10 if filtering else 1)


class _Scorer:
    """score(q, texts/ids): the collection encoder's cosine (stored vectors for documents), or a cross-encoder."""

    def __init__(self, collection, cross_encoder=None, batch_size: int = 32):
        self.col, self.ce, self.batch_size = collection, cross_encoder, batch_size
        self._vectors: dict[str, np.ndarray] | None = None

    def query_vectors(self, queries: list[str]) -> np.ndarray:
        X = self.col.embed(queries, batch_size=self.batch_size)
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)

    def doc_vector(self, doc_id: str) -> np.ndarray:
        if self._vectors is None:  # every stored vector, once (keyword / hybrid candidates carry no cosine)
            ids, X = self.col.vectors()
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
            self._vectors = dict(zip(ids, X))
        return self._vectors[doc_id]

    def candidates(self, query: str, qv: np.ndarray, hits: list) -> np.ndarray:
        if self.ce is not None:
            return np.asarray(self.ce.score(query, [h.text for h in hits]), dtype=np.float64)
        return np.array([float(self.doc_vector(h.id) @ qv) for h in hits], dtype=np.float64)

    def positives(self, query: str, qv: np.ndarray, texts: list[str]) -> np.ndarray:
        if self.ce is not None:
            return np.asarray(self.ce.score(query, texts), dtype=np.float64)
        P = self.col.embed(texts, batch_size=self.batch_size)
        P = P / np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12)
        return (P @ qv).astype(np.float64)


def mine_hard_negatives(collection, pairs: Sequence[Any], *, mode: str = "vector", num_negatives: int = 3,
                        range_min: int = 0, range_max: int | None = None, absolute_margin: float | None = None,
                        relative_margin: float | None = None, max_score: float | None = None,
                        min_score: float | None = None, sampling: str = "top", seed: int = 0, cross_encoder=None,
                        scores: bool = False, batch_size: int = 32, progress: bool | None = None
                        ) -> tuple[list[dict], MiningStats]:
    """One record {"query", "positive", "negatives": [...]} (plus "scores": [positive, negatives...] when asked)
    per pair whose query keeps at least num_negatives candidates; the query's positives (by positive_id, or by
    text with whitespace collapsed) are never negatives. sampling: "top" (the best-ranked survivors) or "random"
    (seeded, among the survivors). cross_encoder: a CrossEncoder (or name) whose scores the filters use."""
    rows = _check_pairs(pairs)
    for name, v in (("num_negatives", num_negatives), ("range_min", range_min)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "num_negatives" else 0):
            raise ValueError(f"{name} must be an integer >= {1 if name == 'num_negatives' else 0}, got {v!r}")
    for name, v in (("absolute_margin", absolute_margin), ("relative_margin", relative_margin)):
        if v is not None and not (np.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if sampling not in ("top", "random"):
        raise ValueError(f"sampling must be 'top' or 'random', got {sampling!r}")
    if max_score is not None and min_score is not None and min_score > max_score:
        raise ValueError(f"min_score {min_score} is above max_score {max_score}: nothing could pass")
    filtering = any(v is not None for v in (absolute_margin, relative_margin, max_score, min_score))
    if range_max is None:
        range_max = default_range_max(range_min, num_negatives, filtering)
    if range_max <= range_min:
        raise ValueError(f"range_max ({range_max}) must be above range_min ({range_min})")
    if num_negatives > range_max - range_min:
        raise ValueError(f"cannot mine {num_negatives} negatives from ranks {range_min}..{range_max - 1} "
                         f"({range_max - range_min} candidates); widen the range or lower num_negatives")
    if collection.count() == 0:
        raise ValueError("the collection is empty; add the corpus to it first (encoderkit index add)")
    if isinstance(cross_encoder, (str, Path)):
        from encoderkit.tasks.rerank import CrossEncoder

        cross_encoder = CrossEncoder.load(cross_encoder)

    by_query: dict[str, list[dict]] = {}
    for r in rows:
        by_query.setdefault(r["query"], []).append(r)
    queries = list(by_query)
    stats = MiningStats(queries=len(queries), pairs=len(rows))
    scorer = _Scorer(collection, cross_encoder, batch_size)
    Q = scorer.query_vectors(queries)
    rng = random.Random(seed)
    show = progress if progress is not None else len(queries) > 50
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(queries), desc="mine", unit="query")
    out: list[dict] = []
    for qi, query in enumerate(queries):
        group = by_query[query]
        pos_texts = list(dict.fromkeys(r["positive"] for r in group))
        pos_ids = {r["positive_id"] for r in group if r["positive_id"] is not None}
        pos_norm = {_norm(t) for t in pos_texts}
        depth = range_max + len(pos_texts) + len(pos_ids)  # room for the positives the search also finds
        hits = collection.search(query, k=depth, mode=mode, **({"vector": Q[qi]} if mode == "vector" else {}))
        cands = [h for h in hits if h.id not in pos_ids and _norm(h.text) not in pos_norm]
        stats.dropped["range"] += max(0, len(cands) - range_max) + min(range_min, len(cands))
        cands = cands[range_min:range_max]  # the rank window, positives left out of the count
        keep = np.ones(len(cands), dtype=bool)
        s = p_scores = None
        if cands and (filtering or scores):
            s = scorer.candidates(query, Q[qi], cands)
            p_scores = scorer.positives(query, Q[qi], pos_texts)
            p = float(p_scores.min())  # the hardest positive sets the bar
            for name, bad in (("absolute_margin", None if absolute_margin is None else s + absolute_margin > p),
                              ("relative_margin", None if relative_margin is None else s > p - abs(p) * relative_margin),
                              ("max_score", None if max_score is None else s > max_score),
                              ("min_score", None if min_score is None else s < min_score)):
                if bad is not None:
                    stats.dropped[name] += int((bad & keep).sum())
                    keep &= ~bad
        idx = np.flatnonzero(keep).tolist()
        if len(idx) < num_negatives:
            stats.short += len(group)
        else:
            chosen = idx[:num_negatives] if sampling == "top" else sorted(rng.sample(idx, num_negatives))
            for r in group:
                rec = {"query": query, "positive": r["positive"], "negatives": [cands[i].text for i in chosen]}
                if scores:
                    rec["scores"] = [float(p_scores[pos_texts.index(r["positive"])])] + [float(s[i]) for i in chosen]
                out.append(rec)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    stats.written = len(out)
    return out, stats


def read_pairs_file(path: str | Path, split: str = "train") -> list[dict]:
    """(query, positive) pairs from a JSONL file ({"query" or "anchor", "positive"[, "positive_id"]} per line), a
    TSV file (query<TAB>positive) or a BEIR folder (queries.jsonl, corpus.jsonl, qrels/SPLIT.tsv with score > 0;
    positive = title + " " + text, positive_id = the corpus id)."""
    p = Path(path)
    if p.is_dir():
        qrels = p / "qrels" / f"{split}.tsv"
        for f in (p / "queries.jsonl", p / "corpus.jsonl", qrels):
            if not f.is_file():
                raise FileNotFoundError(f"{f} not found; pass a BEIR folder (queries.jsonl, corpus.jsonl, qrels/"
                                        f"{split}.tsv), a .jsonl or a .tsv file of pairs")
        queries = {d["_id"]: d["text"] for d in _jsonl(p / "queries.jsonl")}
        corpus = {d["_id"]: (d.get("title", "") + " " + d.get("text", "")).strip() for d in _jsonl(p / "corpus.jsonl")}
        rows = []
        for n, line in enumerate(qrels.read_text(encoding="utf-8").splitlines()[1:], 2):
            parts = line.split("\t")
            if len(parts) < 3:
                raise ValueError(f"{qrels}:{n}: expected query-id<TAB>corpus-id<TAB>score")
            q, d, score = parts[:3]
            if float(score) > 0 and q in queries and d in corpus:
                rows.append({"query": queries[q], "positive": corpus[d], "positive_id": d})
        return rows
    if not p.is_file():
        raise FileNotFoundError(f"pairs file {p} not found")
    if p.suffix == ".tsv":
        rows = []
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                parts = line.split("\t")
                if len(parts) < 2:
                    raise ValueError(f"{p}:{n}: expected query<TAB>positive")
                rows.append({"query": parts[0], "positive": parts[1]})
        return rows
    rows = []
    for n, d in enumerate(_jsonl(p), 1):
        if not isinstance(d, dict) or ("query" not in d and "anchor" not in d) or "positive" not in d:
            raise ValueError(f"{p}:{n}: expected an object with \"query\" and \"positive\"")
        rows.append(d)
    return rows


def _jsonl(path: Path) -> Iterable[Any]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{path}:{n} is not valid JSON ({exc})") from None


def write_jsonl(records: Iterable[dict], path: str | Path) -> Path:
    """One JSON object per line (written to a temporary file, then renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


__all__ = ["MiningStats", "mine_hard_negatives", "read_pairs_file", "write_jsonl", "default_range_max"]
