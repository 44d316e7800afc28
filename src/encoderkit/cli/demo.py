"""`encoderkit demo`: semantic search over the Python standard library's docstrings with the default model."""
from __future__ import annotations

import time

from encoderkit.cli._common import add_json_flag, emit_json

QUESTIONS = [
    "how do I parse JSON text into Python objects",
    "run a shell command and capture what it prints",
    "read a gzip compressed file",
    "draw a random number from a normal distribution",
    "compute the SHA-256 digest of some bytes",
    "find files whose names match a wildcard pattern",
    "measure how long a small piece of code takes to run",
    "send an email message through an SMTP server",
]


def register(sub) -> None:
    p = sub.add_parser("demo", help="semantic search over the standard library's docstrings (the main job)")
    p.add_argument("-m", "--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("-k", type=int, default=5, help="hits per question (default 5)")
    p.add_argument("-q", "--question", action="append", help="your own question (repeatable)")
    add_json_flag(p)
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    import numpy as np

    import encoderkit
    from encoderkit.datasets.stdlib import stdlib_docstrings

    if args.k < 1:
        raise ValueError("-k must be at least 1")
    t0 = time.perf_counter()
    docs = stdlib_docstrings()
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    enc = encoderkit.load(args.model)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    X = enc.encode([f"{d.id}: {d.text}" for d in docs], batch_size=64, normalize=True, progress=None if not args.json else False)
    t_encode = time.perf_counter() - t0
    results = []
    for q in args.question or QUESTIONS:
        t0 = time.perf_counter()
        qv = enc.encode(q, normalize=True)
        scores = X @ qv
        top = np.argsort(-scores)[: args.k]
        ms = (time.perf_counter() - t0) * 1000
        results.append({"question": q, "ms": round(ms, 2),
                        "hits": [{"id": docs[i].id, "score": round(float(scores[i]), 4), "text": docs[i].text[:160]}
                                 for i in top]})
    summary = {"model": enc.name, "documents": len(docs), "read_seconds": round(t_read, 2),
               "load_seconds": round(t_load, 2), "encode_seconds": round(t_encode, 2),
               "docs_per_second": round(len(docs) / t_encode, 1), "questions": results}
    if args.json:
        emit_json(summary)
        return 0
    print(f"{len(docs)} standard-library docstrings read in {t_read:.1f}s; model {enc.name} loaded in {t_load:.1f}s;")
    print(f"encoded in {t_encode:.1f}s ({summary['docs_per_second']} docs/s)\n")
    for r in results:
        print(f"? {r['question']}   ({r['ms']:.1f} ms)")
        for rank, h in enumerate(r["hits"], 1):
            snippet = h["text"][:90] + ("..." if len(h["text"]) > 90 else "")
            print(f"  {rank}. {h['score']:.3f}  {h['id']:<40}  {snippet}")
        print()
    return 0
