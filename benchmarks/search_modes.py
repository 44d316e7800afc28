"""Search modes on BEIR SciFact (run by `python benchmarks/search.py --scifact`): for each of dense vectors, BM25,
late interaction (MaxSim over all-MiniLM-L6-v2's own normalized token vectors, no training), learned sparse (when
a SPLADE / SparseEncoder folder is given) and hybrid fusions, through one embedded Collection: NDCG@10 on the test
queries, queries/s (one query at a time, with the query's encoding (on the first --timing-queries) and with it
given), and bytes per document on
disk (the mode's own SQLite tables, by dbstat, plus its index files) and in memory (its FAISS index; lists kept
in SQLite are read from disk per query and hold no memory of their own).

--limit N keeps every document judged for a test query plus random others up to N documents (seed 0), so NDCG
on a subset is higher than on the full 5,183 (fewer distractors); --limit 0 is the whole corpus."""
from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

MAIN = "sentence-transformers/all-MiniLM-L6-v2"
FIRST = 0  # the smallest query_limit of a plan: every row's NDCG is also given on these first queries
EXACT = 1 << 30  # late_nprobe past every centroid and late_candidates past every document: exact MaxSim over all


def late_plans(name: str, n_docs: int, exact_queries: int, plaid: str = "") -> list[tuple[str, str, dict]]:
    """Late search of one collection (PLAID cache): exact MaxSim over every document (exact_queries < 0: not
    measured), then PLAID at its defaults and at each 'nprobe:re-scored' pair of `plaid` (default 16:128,8:64)."""
    from encoderkit.store.plaid import MIN_CANDIDATES, NPROBE

    exact = {"late_nprobe": EXACT, "late_candidates": n_docs, "query_limit": exact_queries}
    out = [] if exact_queries < 0 else [(f"late {name}, exact (MaxSim over every document)", "late", exact)]
    out.append((f"late {name}, PLAID nprobe {NPROBE}, {MIN_CANDIDATES} re-scored (default)", "late", {}))
    for pair in (plaid or "16:128,8:64").split(","):
        p, c = (int(x) for x in pair.split(":"))
        out.append((f"late {name}, PLAID nprobe {p}, {c} re-scored", "late", {"late_nprobe": p, "late_candidates": c}))
    return out


def subset(data: Any, limit: int, n_queries: int) -> tuple[list[str], list[str], dict, dict]:
    """(doc ids, doc texts, queries, qrels): every judged document plus random others up to `limit`."""
    qids = list(data.queries)[:n_queries] if n_queries else list(data.queries)
    ids = list(data.corpus)
    if limit:
        judged = {d for q in data.qrels for d in data.qrels[q]}  # all test judgments: the same subset for any n_queries
        rng = np.random.default_rng(0)
        others = [d for d in ids if d not in judged]
        keep = judged | set(rng.choice(others, size=max(0, min(len(others), limit - len(judged))), replace=False))
        ids = [d for d in ids if d in keep]
    texts = dict(zip(data.corpus, data.doc_texts()))
    return ids, [texts[d] for d in ids], {q: data.queries[q] for q in qids}, {q: data.qrels[q] for q in qids}


def table_bytes(db: Path) -> dict[str, int]:
    """Bytes of each SQLite table / index in the file (dbstat)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
    finally:
        conn.close()


def footprint(col: Any) -> dict[str, tuple[int, int]]:
    """{kind: (bytes on disk, bytes in memory)} of what each search list keeps, over the whole collection."""
    import faiss

    if "dense" in col.kinds:
        col._sync_index()  # built now (else on the first search), so flush saves it and its file is counted
    if "late" in col.kinds:
        col._sync_late()
    col.flush()
    tables = table_bytes(col.path / "collection.db")
    files = {p.name: p.stat().st_size for p in col.path.iterdir() if p.is_file()}
    n = col.count()
    out = {"keyword": (sum(v for k, v in tables.items() if k.startswith("docs_fts")), 0)}
    if "dense" in col.kinds:
        idx = col._sync_index()
        out["vector"] = (4 * col.dim * n + files.get("index.faiss", 0), len(faiss.serialize_index(idx.index)))
    if "sparse" in col.kinds:
        out["sparse"] = (tables.get("sparse", 0) + tables.get("sparse_rid", 0), 0)
    if "late" in col.kinds:
        late = col._sync_late()
        mem = late.nbytes() if hasattr(late, "nbytes") else len(faiss.serialize_index(late.vi.index))
        out["late"] = (tables.get("multivectors", 0) + files.get("late.faiss", 0), mem)
        out["late exact"] = (tables.get("multivectors", 0), 0)  # no index: every stored token matrix read per query
    return out


def timed_run(col: Any, queries: dict, mode: str, given: dict | None, **opts) -> tuple[dict, float]:
    """(run, queries/s): every query through col.search, one at a time; `given`: per query id the query's
    encodings (vector= / multivector= / sparse=), so only the search is timed."""
    run = {}
    t0 = time.perf_counter()
    for qid, text in queries.items():
        hits = col.search(text, k=10, mode=mode, **(given[qid] if given else {}), **opts)
        run[qid] = {h.id: h.score for h in hits}
    return run, len(queries) / (time.perf_counter() - t0)


def encodings(col: Any, queries: dict, lists: list[str]) -> dict:
    """The query encodings each list needs, per query id (to time search alone)."""
    from encoderkit.store.kinds import encode_multivector, encode_sparse

    qids, texts = list(queries), list(queries.values())
    out: dict = {q: {} for q in qids}
    if "vector" in lists:
        for q, v in zip(qids, col.embed(texts, batch_size=64)):
            out[q]["vector"] = v
    if "late" in lists:
        for q, m in zip(qids, encode_multivector(col.encoder, texts, side="query", plain=True)):
            out[q]["multivector"] = m
    if "sparse" in lists:
        S = encode_sparse(col.encoder, texts, side="query")
        for i, q in enumerate(qids):
            out[q]["sparse"] = S[i]
    return out


def one_pass(enc: Any, texts: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """A mean-pooling model's pooled vectors AND its normalized token vectors from one forward pass (the collection
    would run the model twice); checked against encode() on the first texts."""
    T = enc.encode(texts, output="tokens", batch_size=32)
    V = np.stack([t.mean(0) for t in T])
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    M = [t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12) for t in T]
    ref_v = enc.encode(texts[:4], normalize=True)
    ref_m = enc.encode_document(texts[:4], output="multivector")
    assert np.abs(ref_v - V[:4]).max() < 1e-5 and all(np.abs(a - b).max() < 1e-5 for a, b in zip(ref_m, M))
    return V.astype(np.float32), M


def build(path: Path, encoder: Any, ids: list[str], texts: list[str], kinds: list[str],
          late_index: str | None = None) -> tuple[Any, float]:
    from encoderkit.store import Collection

    t0 = time.perf_counter()
    col = Collection.open(path, encoder, kinds=kinds, late_index=late_index)
    fast = kinds == ["dense", "late"] and encoder.pooling == "mean" and not encoder.dense
    for s in range(0, len(ids), 256):
        if fast:
            V, M = one_pass(encoder, texts[s:s + 256])
            col.add(texts[s:s + 256], ids=ids[s:s + 256], vectors=V, multivectors=M)
        else:
            col.add(texts[s:s + 256], ids=ids[s:s + 256])
    col.flush()
    t1 = time.perf_counter()
    if "late" in kinds:
        col._sync_late()  # PLAID: k-means + every document's codes, timed apart from the encoding
        col.flush()
    return col, time.perf_counter() - t0, time.perf_counter() - t1


def rows_for(col: Any, queries: dict, qrels: dict, plans: list[tuple[str, str, dict]], timing: int = 50) -> list[dict]:
    """Measure each (label, mode, search options) plan on one collection."""
    from encoderkit.evaluate.metrics import evaluate

    global FIRST
    FIRST = min([o.get("query_limit") or len(queries) for _, _, o in plans] + [FIRST or len(queries)])
    size = footprint(col)
    n = col.count()
    given_all = encodings(col, queries, [k for k in ("vector", "late", "sparse") if k in col.modes()])
    rows = []
    for label, mode, opts in plans:
        opts = dict(opts)
        limit = opts.pop("query_limit", 0)  # a slow plan (exact MaxSim over every document): the first queries only
        few_q = dict(list(queries.items())[:limit]) if limit else queries
        lists = opts.get("modes") or [mode]
        given = {q: {k: v for k, v in g.items() if {"vector": "vector", "multivector": "late",
                                                       "sparse": "sparse"}[k] in lists} for q, g in given_all.items()}
        col.search(next(iter(queries.values())), k=10, mode=mode, **opts)  # warm: indexes loaded, model ready
        run, qps_search = timed_run(col, few_q, mode, given, **opts)
        few = dict(list(few_q.items())[:timing])  # the end-to-end rate on the first queries only: NDCG needs one run
        _, qps_all = timed_run(col, few, mode, None, **opts)
        sizes = [size["late exact" if m == "late" and opts.get("late_nprobe") == EXACT else m] for m in lists]
        disk, mem = sum(s[0] for s in sizes), sum(s[1] for s in sizes)
        first = list(queries)[:FIRST]  # every row's NDCG on the first queries too, beside a row measured on them only
        rows.append({"mode": label + (f" (first {limit} queries only)" if limit else ""),
                     "ndcg@10": evaluate({q: qrels[q] for q in few_q}, run, ["ndcg@10"])["ndcg@10"],
                     "ndcg_first": evaluate({q: qrels[q] for q in first}, {q: run[q] for q in first if q in run},
                                            ["ndcg@10"])["ndcg@10"],
                     "qps": qps_all, "qps_search": qps_search, "disk_per_doc": disk / n, "mem_per_doc": mem / n})
        r = rows[-1]
        print(f"| {r['mode']} | {r['ndcg@10']:.4f} | {r['ndcg_first']:.4f} | {r['qps']:,.1f} | "
              f"{r['qps_search']:,.1f} | "
              f"{r['disk_per_doc']:,.0f} | {r['mem_per_doc']:,.0f} |", flush=True)
    return rows


def main_rows(path: Path, enc: Any, ids: list[str], texts: list[str], queries: dict, qrels: dict,
              args: Any) -> list[dict]:
    """Dense, BM25, late over MiniLM's own token vectors and hybrids, from one collection."""
    col, took, t_plaid = build(path, enc, ids, texts, ["dense", "late"], args.late_index)
    print(f"built dense + late + BM25 collection in {took:.0f} s (PLAID cache: {col._sync_late().K} centroids, "
          f"{t_plaid:.0f} s)", flush=True)
    rows = rows_for(col, queries, qrels, [
        ("dense (vector)", "vector", {}),
        ("BM25 (keyword)", "keyword", {}),
        *late_plans("MiniLM tokens", len(ids), args.exact_queries, args.plaid),
        ("hybrid vector+keyword (RRF)", "hybrid", {"modes": ["vector", "keyword"]}),
        ("hybrid vector+keyword+late (RRF, PLAID)", "hybrid", {"modes": ["vector", "keyword", "late"]}),
    ], args.timing_queries)
    col.close()
    return rows


def run(args: Any) -> None:
    import torch

    import encoderkit
    from encoderkit.evaluate.beir import load_beir

    if args.threads:
        import faiss

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    folder = Path(args.data or os.environ.get("ENCODERKIT_DATA", default))
    folder = folder / "scifact" if (folder / "scifact").exists() else folder
    data = load_beir(folder, "test")
    ids, texts, queries, qrels = subset(data, args.limit, args.query_limit)
    print(f"SciFact test: {len(queries)} queries over {len(ids):,} documents "
          f"({'all' if not args.limit else f'--limit {args.limit}: every judged one + random others'}), "
          f"torch threads {torch.get_num_threads()}")
    enc = encoderkit.load(MAIN)
    enc.token_late = True  # MiniLM's own normalized token vectors for late interaction, no training
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.colbert_only:
            rows += main_rows(Path(tmp) / "main", enc, ids, texts, queries, qrels, args)
        if args.colbert_model:
            cb, took, t_plaid = build(Path(tmp) / "colbert", encoderkit.load(args.colbert_model), ids, texts, ["late"],
                                      args.late_index)
            print(f"built ColBERT collection ({args.colbert_model}) in {took:.0f} s (PLAID cache: "
                  f"{cb._sync_late().K} centroids, {t_plaid:.0f} s)", flush=True)
            rows += rows_for(cb, queries, qrels, late_plans("ColBERT head", len(ids), args.exact_queries, args.plaid),
                             args.timing_queries)
            cb.close()
        if args.sparse_model:
            sp, took, _ = build(Path(tmp) / "sparse", encoderkit.load(args.sparse_model), ids, texts, ["sparse"])
            print(f"built sparse collection ({args.sparse_model}) in {took:.0f} s")
            rows += rows_for(sp, queries, qrels, [("sparse", "sparse", {}),
                                                  ("hybrid keyword+sparse (RRF)", "hybrid",
                                                   {"modes": ["keyword", "sparse"]})], args.timing_queries)
            sp.close()
    print(f"\n| mode | NDCG@10 | NDCG@10 (first {FIRST} queries) | queries/s (with query encoding) | queries/s (search "
          "only) | bytes/doc on disk | bytes/doc in memory |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['ndcg@10']:.4f} | {r['ndcg_first']:.4f} | {r['qps']:,.1f} | "
              f"{r['qps_search']:,.1f} | "
              f"{r['disk_per_doc']:,.0f} | {r['mem_per_doc']:,.0f} |")
    if not args.sparse_model:
        print("\nsparse: not measured; it needs a trained SPLADE-style model (MLM head + SpladePooling): give its "
              "SparseEncoder folder with --sparse-model. None ships offline here (all-MiniLM-L6-v2 has no MLM head).")
