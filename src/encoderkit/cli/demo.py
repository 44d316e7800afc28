"""`encoderkit demo`: semantic search over the Python standard library's docstrings with the default model,
kept in a persistent collection (built on the first run, reopened afterwards) and queried in hybrid mode."""
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
    p.add_argument("-m", "--model", default="sentence-transformers/all-MiniLM-L6-v2",
                   help="model name or folder (default all-MiniLM-L6-v2)")
    p.add_argument("-k", type=int, default=5, help="hits per question (default 5)")
    p.add_argument("-q", "--question", action="append", help="your own question (repeatable)")
    p.add_argument("--mode", default="hybrid", choices=["vector", "keyword", "hybrid"],
                   help="search mode (default hybrid: vector and keyword fused)")
    p.add_argument("--collection", default="stdlib-demo",
                   help="collection name or path (default: stdlib-demo under $ENCODERKIT_HOME/collections)")
    p.add_argument("--store", metavar="DIR", help="directory holding collections")
    p.add_argument("--rebuild", action="store_true", help="drop and rebuild the collection")
    add_json_flag(p)
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    import shutil

    import encoderkit
    from encoderkit.datasets.stdlib import stdlib_docstrings, stdlib_fingerprint
    from encoderkit.store.collection import Collection, collection_path

    if args.k < 1:
        raise ValueError("-k must be at least 1")
    path = collection_path(args.collection, args.store)
    if args.rebuild and path.exists():
        shutil.rmtree(path)
    t0 = time.perf_counter()
    enc = encoderkit.load(args.model)
    t_load = time.perf_counter() - t0
    col = Collection.open(path, enc)
    built, t_build, n_new = False, 0.0, 0
    fingerprint = stdlib_fingerprint()
    meta = col.store.meta()
    current = meta.get("stdlib_fingerprint") == fingerprint and meta.get("stdlib_documents") == str(col.count())
    docs = [] if current else stdlib_docstrings()  # a reopened, complete collection: no need to parse the stdlib
    if not current and col.count() != len(docs):  # first run, or an interrupted one: upsert in batches (re-runnable)
        t0 = time.perf_counter()
        batch = 512
        for i in range(0, len(docs), batch):
            chunk = docs[i:i + batch]
            col.upsert([f"{d.id}: {d.text}" for d in chunk], ids=[d.id for d in chunk],
                       metadatas=[{"kind": d.kind, "module": d.module} for d in chunk])
            n_new += len(chunk)
            if not args.json:
                print(f"\rbuilding {path.name}: {n_new}/{len(docs)} docstrings", end="", flush=True)
        if not args.json:
            print()
        col.flush()
        built, t_build = True, time.perf_counter() - t0
    if not current:  # complete now: later runs trust the count while the stdlib files are unchanged
        col.store.set_meta({"stdlib_fingerprint": fingerprint, "stdlib_documents": col.count()})
    results = []
    for q in args.question or QUESTIONS:
        t0 = time.perf_counter()
        hits = col.search(q, k=args.k, mode=args.mode)
        ms = (time.perf_counter() - t0) * 1000
        results.append({"question": q, "ms": round(ms, 2),
                        "hits": [{"id": h.id, "score": round(float(h.score), 4),
                                  "text": h.text.split(": ", 1)[-1][:160]} for h in hits]})
    summary = {"model": enc.name, "collection": str(path), "documents": col.count(), "mode": args.mode,
               "built": built, "load_seconds": round(t_load, 2), "build_seconds": round(t_build, 2),
               "docs_per_second": round(n_new / t_build, 1) if built and t_build else None, "questions": results}
    col.close()
    if args.json:
        emit_json(summary)
        return 0
    how = (f"built in {t_build:.1f}s ({summary['docs_per_second']} docs/s)" if built else "reopened")
    print(f"{summary['documents']} standard-library docstrings in collection {path} ({how}); "
          f"model {enc.name} loaded in {t_load:.1f}s; {args.mode} search\n")
    for r in results:
        print(f"? {r['question']}   ({r['ms']:.1f} ms)")
        for rank, h in enumerate(r["hits"], 1):
            snippet = h["text"][:80] + ("..." if len(h["text"]) > 80 else "")
            print(f"  {rank}. {h['score']:.4f}  {h['id']:<40}  {snippet}")
        print()
    return 0
