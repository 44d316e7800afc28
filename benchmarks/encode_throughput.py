"""encoderkit vs sentence-transformers: same texts, same threads, same model, one process, one run.
Prints texts/s for both, the ratio, and the worst cosine between the two sets of vectors.

    .venv/bin/python benchmarks/encode_throughput.py [--texts scifact|queries|stdlib] [--n 2000] [--rounds 2]

Rounds alternate the two engines so that machine noise hits both alike; the best round of each counts."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("ENCODERKIT_DATA", HERE.parent.parent / "shared" / "data"))


def load_texts(kind: str, n: int | None) -> list[str]:
    if kind == "stdlib":
        from encoderkit.datasets.stdlib import stdlib_docstrings

        texts = [d.text for d in stdlib_docstrings()]
    elif kind in ("scifact", "queries"):
        f = DATA / "scifact" / ("corpus.jsonl" if kind == "scifact" else "queries.jsonl")
        if not f.is_file():
            sys.exit(f"{f} not found: use --texts stdlib or set ENCODERKIT_DATA")
        rows = [json.loads(line) for line in f.open()]
        texts = [(r.get("title", "") + " " + r["text"]).strip() for r in rows]
    else:
        sys.exit(f"unknown --texts {kind!r}")
    return texts[:n] if n else texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", default="stdlib", choices=["stdlib", "scifact", "queries"])
    ap.add_argument("--n", type=int, default=2000, help="how many texts (0 = all)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import encoderkit
    from encoderkit.checkpoints.hub import packaged_folder
    from sentence_transformers import SentenceTransformer

    texts = load_texts(args.texts, args.n or None)
    ours = encoderkit.load("all-MiniLM-L6-v2")
    ref = SentenceTransformer(str(packaged_folder("sentence-transformers/all-MiniLM-L6-v2")), device="cpu")
    ours.encode(texts[:64]), ref.encode(texts[:64])  # warm-up
    best = {"sentence-transformers": float("inf"), "encoderkit": float("inf")}
    vecs = {}
    for _ in range(args.rounds):
        for name in best:
            t0 = time.perf_counter()
            if name == "encoderkit":
                vecs[name] = ours.encode(texts, batch_size=args.batch_size, progress=False)
            else:
                vecs[name] = ref.encode(texts, batch_size=args.batch_size, show_progress_bar=False)
            best[name] = min(best[name], time.perf_counter() - t0)
    a, b = vecs["encoderkit"], vecs["sentence-transformers"]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    rate = {k: len(texts) / v for k, v in best.items()}
    print(f"texts: {args.texts} x {len(texts)} (mean {np.mean([len(t) for t in texts]):.0f} chars), "
          f"batch {args.batch_size}, torch threads {torch.get_num_threads()}, best of {args.rounds} rounds")
    for k in best:
        print(f"  {k:<22} {best[k]:8.2f} s  {rate[k]:8.1f} texts/s")
    print(f"  ratio encoderkit / sentence-transformers: {rate['encoderkit'] / rate['sentence-transformers']:.2f}x")
    print(f"  min cosine between the two: {cos.min():.7f}")


if __name__ == "__main__":
    main()
