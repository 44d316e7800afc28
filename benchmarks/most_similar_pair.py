"""The Sentence-BERT anchor: find the most similar pair among 10,000 sentences, end to end (encode + exact
all-pairs search), encoderkit vs sentence-transformers' `util.paraphrase_mining` in the same run.

    .venv/bin/python benchmarks/most_similar_pair.py [--n 10000] [--model all-MiniLM-L6-v2] [--threads N]

Sentences: the distinct sentences of STS-B (train, dev, test), first n. --model may be any encoderkit model or run
folder (e.g. a DAN); sentence-transformers always runs all-MiniLM-L6-v2, the same default model."""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("ENCODERKIT_DATA", HERE.parent.parent / "shared" / "data"))


def sentences(n: int) -> list[str]:
    seen: dict[str, None] = {}
    for split in ("train", "dev", "test"):
        f = DATA / "stsbenchmark" / f"sts-{split}.csv"
        if not f.is_file():
            sys.exit(f"{f} not found (set ENCODERKIT_DATA)")
        with open(f, encoding="utf-8") as fh:
            for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
                for s in row[5:7]:
                    seen.setdefault(s.strip(), None)
    texts = [t for t in seen if t]
    if len(texts) < n:
        sys.exit(f"only {len(texts)} distinct sentences available, asked for {n}")
    return texts[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--skip-peer", action="store_true", help="do not run sentence-transformers")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    texts = sentences(args.n)
    import encoderkit
    from encoderkit.tasks.similar_pairs import most_similar_pairs

    enc = encoderkit.load(args.model)
    enc.encode(texts[:64])  # warm-up, as for the peer
    t0 = time.perf_counter()
    vecs = enc.encode(texts, batch_size=args.batch_size, progress=False)
    t1 = time.perf_counter()
    (score, i, j), = most_similar_pairs(vecs, 1)
    t2 = time.perf_counter()
    ours = t2 - t0
    print(f"{len(texts)} distinct STS-B sentences, torch threads {torch.get_num_threads()}")
    print(f"  encoderkit ({args.model}): {ours:.2f} s end to end (encode {t1 - t0:.2f} s, all-pairs search "
          f"{t2 - t1:.2f} s){'  GOAL < 5 s MET' if ours < 5 else ''}")
    print(f"    best pair {score:.4f}: {texts[i]!r} ~ {texts[j]!r}")
    if args.skip_peer:
        return
    from sentence_transformers import SentenceTransformer, util

    from encoderkit.checkpoints.hub import packaged_folder

    ref = SentenceTransformer(str(packaged_folder("sentence-transformers/all-MiniLM-L6-v2")), device="cpu")
    ref.encode(texts[:64])
    t0 = time.perf_counter()
    pairs = util.paraphrase_mining(ref, texts, batch_size=args.batch_size, top_k=1, show_progress_bar=False)
    theirs = time.perf_counter() - t0
    s, a, b = pairs[0]
    print(f"  sentence-transformers paraphrase_mining (all-MiniLM-L6-v2): {theirs:.2f} s end to end")
    print(f"    best pair {s:.4f}: {texts[a]!r} ~ {texts[b]!r}")
    print(f"  ratio: encoderkit {theirs / ours:.2f}x faster; same pair: {sorted((i, j)) == sorted((a, b))}")


if __name__ == "__main__":
    main()
