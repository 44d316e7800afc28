"""Search benchmark (not a test): exact top-10 through a Collection vs a raw faiss.IndexFlatIP over the same
vectors in the same run (goal: ratio <= 1.1), then HNSW32 recall@10 and queries/s by efSearch.
Random Gaussian vectors, the worst case for graph indexes. Usage: python benchmarks/search.py --n 1000000

    python benchmarks/search.py --factories Flat,IVF4096,PQ48,HNSW32 --scale-n 1000000 [--data gaussian|lowrank]

measures each FAISS factory string through encoderkit's VectorIndex (the class a Collection uses; trained
indexes are trained on a sample of the size the Collection uses) at scale: build time, recall@10 against exact
search, queries/s (one query at a time) and bytes per vector of the serialized index. `lowrank` vectors have an
intrinsic dimension of 32 plus noise, closer to real embeddings than isotropic Gaussians.

    python benchmarks/search.py --scifact [--limit 1000] [--query-limit 300] [--sparse-model FOLDER]
        [--colbert-model FOLDER] [--exact-queries N] [--plaid 16:128,8:64] [--threads 1]

measures each search mode (dense, BM25, late exact and through PLAID, sparse, hybrid) on BEIR SciFact: NDCG@10,
queries/s and bytes per document on disk and in memory (benchmarks/search_modes.py)."""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


class _NoEncoder:
    """Vectors are given directly; this only names the 'model' recorded in the collection."""

    def __init__(self, dim: int):
        self.dim, self.name, self.max_length, self.tokenizer = dim, f"random-{dim}", 512, None

    def encode(self, *a, **k):
        raise RuntimeError("benchmark passes vectors")


def unit(rng, n, d):
    X = rng.standard_normal((n, d), dtype=np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def per_query(fn, Q) -> float:
    t0 = time.perf_counter()
    for q in Q:
        fn(q)
    return (time.perf_counter() - t0) / len(Q)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors for the exact benchmark (default 1M)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--hnsw-n", type=int, default=100_000, help="vectors for the HNSW benchmark (default 100k)")
    ap.add_argument("--ef", default="16,64,128,256,512", help="efSearch values")
    ap.add_argument("--threads", type=int, default=0, help="FAISS threads (0: FAISS default)")
    ap.add_argument("--factories", default="", help="comma-separated factory strings ('IVF4096,PQ48' is one: "
                    "separate factories with ';' when a factory has a comma)")
    ap.add_argument("--scale-n", type=int, default=1_000_000)
    ap.add_argument("--data", default="gaussian", choices=["gaussian", "lowrank"])
    ap.add_argument("--scifact", action="store_true", help="per search mode on BEIR SciFact (benchmarks/search_modes.py); "
                                                            "--threads sets torch's and FAISS's threads")
    ap.add_argument("--limit", type=int, default=1000, help="--scifact: documents kept (every judged one + random "
                                                            "others; 0: all 5,183)")
    ap.add_argument("--query-limit", type=int, default=0, help="--scifact: test queries used (0: all 300)")
    ap.add_argument("--sparse-model", help="--scifact: a SPLADE / SparseEncoder folder for the sparse mode")
    ap.add_argument("--colbert-model", help="--scifact: a ColBERT / MultiVectorEncoder folder (e.g. from `encoderkit "
                                            "train colbert`) for late rows of its own collection")
    ap.add_argument("--exact-queries", type=int, default=0, help="--scifact: queries for the exact late rows (MaxSim "
                                                                 "over every document; 0: all; -1: none)")
    ap.add_argument("--plaid", default="", help="--scifact: late rows beside PLAID's defaults, 'nprobe:re-scored' "
                                                "pairs (default '16:128,8:64')")
    ap.add_argument("--colbert-only", action="store_true", help="--scifact: only the --colbert-model collection")
    ap.add_argument("--late-index", default="PLAID", help="--scifact: the collections' late index (PLAID{K}: K centroids)")
    ap.add_argument("--timing-queries", type=int, default=50, help="--scifact: queries timed with their encoding")
    ap.add_argument("--beir", metavar="DIR", help="--scifact: the SciFact folder (default $ENCODERKIT_DATA/scifact)")
    args = ap.parse_args()
    if args.scifact:
        from search_modes import run

        args.data = args.beir
        return run(args)
    if args.factories:
        return scale(args)
    import faiss

    from encoderkit.store import Collection

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    X = unit(rng, args.n, args.dim)
    Q = unit(rng, args.queries, args.dim)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        col = Collection.open(f"{tmp}/flat", _NoEncoder(args.dim))
        step = 100_000
        for s in range(0, args.n, step):
            col.add([""] * len(X[s:s + step]), ids=[str(i) for i in range(s, s + len(X[s:s + step]))],
                    vectors=X[s:s + step])
        col.search("", k=10, vector=Q[0])  # builds the index from SQLite
        t_build = time.perf_counter() - t0
        raw = faiss.IndexFlatIP(args.dim)
        raw.add(X)
        for q in Q[:3]:  # warm both
            raw.search(q[None], 10)
            col.search("", k=10, vector=q)
        t_raw = per_query(lambda q: raw.search(q[None], 10), Q)
        t_col = per_query(lambda q: col.search("", k=10, vector=q), Q)
        t_raw2 = per_query(lambda q: raw.search(q[None], 10), Q)  # again: machine noise shows here
        t_raw = min(t_raw, t_raw2)
        agree = np.mean([[h.id for h in col.search("", k=10, vector=q)] == [str(i) for i in raw.search(q[None], 10)[1][0]]
                         for q in Q[:20]])
        print(f"exact top-10 over {args.n:,} x {args.dim}: raw IndexFlatIP {t_raw * 1e3:.2f} ms/query, "
              f"Collection.search {t_col * 1e3:.2f} ms/query, ratio {t_col / t_raw:.3f} (goal <= 1.1); "
              f"same ids on {agree:.0%} of queries; collection built in {t_build:.0f} s")
        col.close()

        n = min(args.hnsw_n, args.n)
        t0 = time.perf_counter()
        hn = Collection.open(f"{tmp}/hnsw", _NoEncoder(args.dim), index="HNSW32")
        for s in range(0, n, step):
            e = min(n, s + step)
            hn.add([""] * (e - s), ids=[str(i) for i in range(s, e)], vectors=X[s:e])
        hn.search("", k=10, vector=Q[0])
        print(f"HNSW32 over {n:,} x {args.dim} built in {time.perf_counter() - t0:.0f} s")
        truth = np.argsort(-(Q @ X[:n].T), axis=1)[:, :10]
        for ef in [int(e) for e in args.ef.split(",")]:
            t0 = time.perf_counter()
            got = [[int(h.id) for h in hn.search("", k=10, vector=q, ef_search=ef)] for q in Q]
            dt = time.perf_counter() - t0
            rec = np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth)])
            print(f"  efSearch {ef:4d}: recall@10 {rec:.3f}, {len(Q) / dt:,.0f} queries/s")
        hn.close()


def lowrank(rng, n, d, rank=32, noise=0.15):
    """Unit vectors near a random rank-`rank` subspace: X = normalize(Z W + noise)."""
    W = rng.standard_normal((rank, d), dtype=np.float32) / np.sqrt(rank)
    out = np.empty((n, d), np.float32)
    for s in range(0, n, 100_000):
        m = min(n, s + 100_000) - s
        x = rng.standard_normal((m, rank), dtype=np.float32) @ W
        x += noise * rng.standard_normal((m, d), dtype=np.float32)
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _split_factories(spec: str) -> list[str]:
    if ";" in spec:
        return [f.strip() for f in spec.split(";") if f.strip()]
    out: list[str] = []
    for part in (p.strip() for p in spec.split(",")):  # rejoin "IVF4096" + "PQ48" into one factory
        if out and part.startswith(("PQ", "SQ", "Flat")) and out[-1].startswith("IVF") and "," not in out[-1]:
            out[-1] += "," + part
        elif part:
            out.append(part)
    return out


def scale(args) -> None:
    import faiss

    from encoderkit.store.faiss_index import VectorIndex, train_size

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    make = unit if args.data == "gaussian" else lowrank
    X = make(rng, args.scale_n + args.queries, args.dim)  # one draw: queries come from the same distribution
    X, Q = X[:args.scale_n], X[args.scale_n:].copy()
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(X)
    truth = exact.search(Q, 10)[1]
    del exact
    print(f"{args.scale_n:,} x {args.dim} {args.data} unit vectors, {len(Q)} queries, FAISS threads "
          f"{faiss.omp_get_max_threads()}")
    for factory in _split_factories(args.factories):
        t0 = time.perf_counter()
        vi = VectorIndex(args.dim, factory, "cosine")
        n_train = 0
        if not vi.is_trained:
            n_train = min(args.scale_n, max(train_size(factory), 50_000))
            vi.train(X[rng.choice(args.scale_n, n_train, replace=False)])
        t_train = time.perf_counter() - t0
        for s in range(0, args.scale_n, 100_000):
            vi.add(np.arange(s, min(args.scale_n, s + 100_000)), X[s:s + 100_000])
        t_build = time.perf_counter() - t0
        size = len(faiss.serialize_index(vi.index))
        knobs = [None]
        if vi.is_hnsw:
            knobs = [64, 128, 256]
        elif vi.is_ivf:
            knobs = [16, 64, 256]
        print(f"{factory}: built in {t_build:.0f} s (training {t_train:.0f} s on {n_train:,}), "
              f"{size / args.scale_n:.1f} bytes/vector")
        for knob in knobs:
            kw = {} if knob is None else ({"ef_search": knob} if vi.is_hnsw else {"nprobe": knob})
            vi.search(Q[:2], 10, **kw)
            t0 = time.perf_counter()
            got = np.vstack([vi.search(q[None], 10, **kw)[1] for q in Q])
            dt = time.perf_counter() - t0
            rec = np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth)])
            label = "" if knob is None else (f"efSearch {knob}" if vi.is_hnsw else f"nprobe {knob}")
            print(f"  {label:<14} recall@10 {rec:.3f}  {len(Q) / dt:8,.0f} queries/s")
        del vi


if __name__ == "__main__":
    main()
