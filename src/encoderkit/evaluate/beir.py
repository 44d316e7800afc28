"""Retrieval evaluation on a BEIR folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`), through a
Collection (vector / keyword / hybrid / late, optional rerank), exact cosine search in memory, exact MaxSim
(late interaction) or exact sparse dot products (SPLADE) over every document in memory."""
from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from encoderkit.evaluate.metrics import DEFAULT, evaluate

log = logging.getLogger(__name__)


@dataclass
class BeirData:
    corpus: dict[str, dict]            # doc id -> {"title", "text", ...}
    queries: dict[str, str]            # query id -> text (only those with judgments in the split)
    qrels: dict[str, dict[str, int]]   # query id -> {doc id: relevance}

    def doc_ids(self) -> list[str]:
        return list(self.corpus)

    def doc_texts(self) -> list[str]:
        """title + " " + text, as BEIR's dense retrievers join them (just the text when there is no title)."""
        return [(d.get("title") or "").strip() + " " + d.get("text", "") if (d.get("title") or "").strip()
                else d.get("text", "") for d in self.corpus.values()]


def _jsonl(path: Path) -> Iterable[dict]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: malformed JSON line ({exc.msg})") from None


def beir_files(folder: str | Path, split: str = "test") -> list[Path]:
    """[corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv] of a BEIR folder; FileNotFoundError naming the first missing
    one (cheap: run before a model loads)."""
    folder = Path(folder).expanduser()
    need = [folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"]
    for p in need:
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: a BEIR folder has corpus.jsonl, queries.jsonl and qrels/{split}.tsv")
    return need


def load_beir(folder: str | Path, split: str = "test") -> BeirData:
    """Read a BEIR dataset folder; queries are restricted to those judged in `split`."""
    need = beir_files(folder, split)
    corpus = {str(o["_id"]): o for o in _jsonl(need[0])}
    qrels: dict[str, dict[str, int]] = {}
    with open(need[2], encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t")
        for lineno, row in enumerate(rows, start=1):
            if lineno == 1 and row and not row[-1].lstrip("-").isdigit():
                continue  # header: query-id corpus-id score
            if len(row) < 3:
                raise ValueError(f"{need[2]}:{lineno}: expected 'query-id<TAB>corpus-id<TAB>score'")
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    queries = {str(o["_id"]): o["text"] for o in _jsonl(need[1])}
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise ValueError(f"{len(missing)} judged queries are missing from queries.jsonl (e.g. {missing[0]!r})")
    return BeirData(corpus, {q: queries[q] for q in qrels}, qrels)


def exact_run(doc_vecs: np.ndarray, doc_ids: list[str], query_vecs: np.ndarray, query_ids: list[str],
              k: int = 100) -> dict[str, dict[str, float]]:
    """Exact top-k by inner product (cosine for normalized vectors), the BEIR dense-retrieval reference."""
    run = {}
    for s in range(0, len(query_ids), 256):
        S = query_vecs[s:s + 256] @ doc_vecs.T
        top = np.argpartition(-S, min(k, S.shape[1] - 1), axis=1)[:, :k]
        for r, qid in enumerate(query_ids[s:s + 256]):
            run[qid] = {doc_ids[j]: float(S[r, j]) for j in top[r]}
    return run


def late_run(encoder: Any, data: BeirData, k: int = 100, batch_size: int = 64, block: int = 512,
             progress: bool | None = None) -> dict[str, dict[str, float]]:
    """Exact late interaction: every judged query scored by MaxSim against every document, top k kept. Queries are
    encoded once; the corpus is encoded `block` documents at a time, scored against all queries (padded (q, Lq, d) x
    (64, Ld, d) matmuls, a few queries at a time) and dropped, so memory holds one block of token vectors and the
    running top k, never the corpus. A ColBERT / multi-vector model gives its own query and document token vectors;
    a plain model its normalized token vectors (the late interaction of a collection created with `token_late`)."""
    import torch

    from encoderkit.multivector import encode_multivector
    from encoderkit.tasks.maxsim import _pad

    qids, doc_ids, texts = list(data.queries), data.doc_ids(), data.doc_texts()
    Qv = encode_multivector(encoder, [data.queries[q] for q in qids], task="query", batch_size=batch_size,
                            prompt=encoder.prompts.get("query", ""), plain=True)
    q, qm = _pad(Qv)  # (Q, Lq, d), (Q, Lq)
    best = torch.full((len(qids), 0), float("-inf"))
    best_idx = torch.zeros((len(qids), 0), dtype=torch.long)
    bar = None
    if progress or (progress is None and len(texts) > 2000):
        from tqdm.auto import tqdm

        bar = tqdm(total=len(texts), desc="late: encode + MaxSim", unit="doc")
    with torch.inference_mode():
        for s in range(0, len(texts), block):
            Dv = encode_multivector(encoder, texts[s:s + block], task="document", batch_size=batch_size,
                                    prompt=encoder.prompts.get("document", ""), plain=True)
            d, dm = _pad(Dv)  # (n, Ld, d), (n, Ld)
            scores = torch.empty(len(qids), len(Dv))
            # 64 documents x a few queries per matmul: ~16 MiB of similarities, under glibc's mmap threshold, so the
            # buffers are reused (256 MiB ones cost 1.8x the time here, a third of it page faults)
            for b in range(0, len(Dv), 64):
                db, mb = d[b:b + 64], dm[b:b + 64]  # (n, Ld, d), (n, Ld)
                per = max(1, 2 ** 22 // (q.shape[1] * db.shape[0] * db.shape[1]))
                for a in range(0, len(qids), per):
                    sim = torch.einsum("qid,njd->qnij", q[a:a + per], db)  # (q, n, Lq, Ld)
                    sim = sim.masked_fill_(~mb[None, :, None, :], float("-inf")).amax(-1)  # (q, n, Lq)
                    sim = torch.where(torch.isfinite(sim), sim, torch.zeros(()))  # a document with no kept token: 0
                    scores[a:a + per, b:b + 64] = (sim * qm[a:a + per, None, :]).sum(-1)  # (q, n)
            cand = torch.cat([best, scores], 1)
            idx = torch.cat([best_idx, torch.arange(s, s + len(Dv)).expand(len(qids), -1)], 1)
            top = cand.topk(min(k, cand.shape[1]), dim=1)
            best, best_idx = top.values, idx.gather(1, top.indices)
            if bar is not None:
                bar.update(len(Dv))
    if bar is not None:
        bar.close()
    return {qid: {doc_ids[j]: float(v) for j, v in zip(best_idx[r].tolist(), best[r].tolist())}
            for r, qid in enumerate(qids)}


def sparse_run(encoder: Any, data: BeirData, k: int = 100, batch_size: int = 32,
               progress: bool | None = None) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Exact sparse retrieval: every judged query's SPLADE vector (encode_query, output="sparse": scipy CSR) dotted
    with every document's (encode_document), top k kept; and the mean active dimensions of queries and documents.
    The scores are one CSR x dense product per block of 2,048 documents, the queries held dense (Q, V)."""
    qids, doc_ids, texts = list(data.queries), data.doc_ids(), data.doc_texts()
    Q = encoder.encode_query([data.queries[q] for q in qids], output="sparse", batch_size=batch_size,
                             progress=progress)
    D = encoder.encode_document(texts, output="sparse", batch_size=batch_size, progress=progress)
    Qd = Q.toarray().T  # (V, Q)
    S = np.empty((len(qids), len(doc_ids)), np.float32)
    for s in range(0, len(doc_ids), 2048):
        S[:, s:s + 2048] = (D[s:s + 2048] @ Qd).T  # (Q, block)
    run = {}
    kk = min(k, S.shape[1])
    top = np.argpartition(-S, kk - 1, axis=1)[:, :kk]
    for r, qid in enumerate(qids):
        run[qid] = {doc_ids[j]: float(S[r, j]) for j in top[r]}
    active = {"active_dims_queries": round(float(np.diff(Q.indptr).mean()), 1) if len(qids) else 0.0,
              "active_dims_documents": round(float(np.diff(D.indptr).mean()), 1) if len(doc_ids) else 0.0}
    return run, active


def collection_run(collection: Any, data: BeirData, mode: str = "vector", k: int = 100,
                   query_vecs: np.ndarray | None = None, progress: bool | None = None, **search_opts) -> dict:
    """Run every judged query through `collection.search` (query vectors encoded in one batch)."""
    qids = list(data.queries)
    texts = [data.queries[q] for q in qids]
    if mode != "keyword" and query_vecs is None:
        query_vecs = collection.embed(texts, batch_size=64, progress=progress)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(qids), desc=f"search {mode}", unit="query")
    run = {}
    for i, (qid, text) in enumerate(zip(qids, texts)):
        vec = None if mode == "keyword" else query_vecs[i]
        hits = collection.search(text, k=k, mode=mode, vector=vec, **search_opts)
        run[qid] = {h.id: h.score for h in hits}
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return run


def drop_identical_ids(run: dict[str, dict[str, float]], k: int) -> dict[str, dict[str, float]]:
    """The run without any retrieved document whose id is the query's own id (MTEB's rule for ArguAna-style
    sets, where a query is itself a corpus document), each query's list cut back to its best k."""
    out = {}
    for qid, scores in run.items():
        kept = sorted(((d, s) for d, s in scores.items() if d != qid), key=lambda t: t[1], reverse=True)
        out[qid] = dict(kept[:k])
    return out


def evaluate_beir(folder: str | Path, encoder: Any = None, *, mode: str = "vector", split: str = "test",
                  collection: Any = None, metrics: Iterable[str] = DEFAULT, k: int = 100, batch_size: int = 64,
                  progress: bool | None = None, ignore_identical_ids: bool = False, **search_opts) -> dict:
    """Metrics of a retrieval run on a BEIR folder. With `collection` (already holding the corpus) search goes
    through it; else a temporary collection is built when mode is keyword/hybrid, or exact search in memory
    for vector mode (cosine), late mode (MaxSim over token vectors, late_run) and sparse mode (a SPLADE model's
    sparse dot products, sparse_run; the result adds the mean active dimensions). `ignore_identical_ids` drops a
    hit whose id equals the query id (one more is retrieved so k stay).
    Returns {"ndcg@10": ..., ..., "queries": n, "mode": mode, "seconds": ...}."""
    t0 = time.perf_counter()
    data = load_beir(folder, split)
    final_k, k = k, (k + 1 if ignore_identical_ids else k)
    extra: dict = {}
    if collection is not None:
        run = collection_run(collection, data, mode, k, progress=progress, **search_opts)
    elif mode == "late" and not search_opts:
        run = late_run(encoder, data, k, batch_size=batch_size, progress=progress)
    elif mode == "sparse" and not search_opts:
        run, extra = sparse_run(encoder, data, k, batch_size=batch_size, progress=progress)
    elif mode == "vector" and not search_opts:
        D = encoder.encode(data.doc_texts(), batch_size=batch_size, normalize=True, progress=progress)
        Q = encoder.encode(list(data.queries.values()), batch_size=batch_size, normalize=True, progress=progress)
        run = exact_run(D, data.doc_ids(), Q, list(data.queries), k)
    else:
        import tempfile

        from encoderkit.store import Collection

        with tempfile.TemporaryDirectory() as tmp:
            col = Collection.open(tmp, encoder)
            try:
                X = None
                if mode != "keyword" or search_opts.get("rerank") is not None:
                    X = encoder.encode(data.doc_texts(), batch_size=batch_size, normalize=True, progress=progress)
                else:
                    X = np.zeros((len(data.corpus), col.dim), np.float32)  # keyword only: vectors unused
                    X[:, 0] = 1.0
                col.add(data.doc_texts(), ids=data.doc_ids(), vectors=X)
                run = collection_run(col, data, mode, k, progress=progress, **search_opts)
            finally:
                col.close()
    run = drop_identical_ids(run, final_k) if ignore_identical_ids else run
    out = {m: round(v, 5) for m, v in evaluate(data.qrels, run, metrics).items()}
    out.update({"queries": len(run), "documents": len(data.corpus), "mode": mode, **extra,
                "ignore_identical_ids": ignore_identical_ids,
                "seconds": round(time.perf_counter() - t0, 1)})
    return out


def evaluate_beir_dimensions(folder: str | Path, encoder: Any, dimensions: Iterable[int], *, split: str = "test",
                             metrics: Iterable[str] = DEFAULT, k: int = 100, batch_size: int = 64,
                             progress: bool | None = None) -> list[dict]:
    """Exact vector search at several Matryoshka widths from ONE encoding of the corpus and queries: each width d
    keeps the first d dimensions of the pooled vectors and renormalizes them (what encode(dimensions=d) returns).
    One result dict per width, as evaluate_beir's, plus "dimensions"."""
    dims = list(dimensions)
    bad = [d for d in dims if isinstance(d, bool) or not isinstance(d, int) or not 0 < d <= encoder.dim]
    if not dims or bad:
        raise ValueError(f"dimensions must be integers in 1..{encoder.dim} (the model's width), got {dims}")
    t0 = time.perf_counter()
    data = load_beir(folder, split)
    D = encoder.encode(data.doc_texts(), batch_size=batch_size, normalize=False, progress=progress)
    Q = encoder.encode(list(data.queries.values()), batch_size=batch_size, normalize=False, progress=progress)
    seconds = time.perf_counter() - t0
    out = []
    for d in dims:
        Dd, Qd = (X[:, :d] / np.maximum(np.linalg.norm(X[:, :d], axis=1, keepdims=True), 1e-12) for X in (D, Q))
        run = exact_run(np.ascontiguousarray(Dd), data.doc_ids(), np.ascontiguousarray(Qd), list(data.queries), k)
        res = {m: round(v, 5) for m, v in evaluate(data.qrels, run, metrics).items()}
        out.append({"dimensions": d, **res, "queries": len(run), "documents": len(data.corpus), "mode": "vector",
                    "ignore_identical_ids": False, "seconds": round(seconds, 1)})
    return out
