"""`encoderkit mine`: hard negatives for (query, positive) pairs from a collection, written as JSONL lines
{"query", "positive", "negatives": [...]} (the input of contrastive training with hard negatives)."""
from __future__ import annotations

import math
import sys

from encoderkit.cli._common import add_json_flag, emit_json, hidden_alias


def register(sub) -> None:
    p = sub.add_parser("mine", help="mine hard negatives for query/positive pairs from a collection (JSONL out)")
    p.add_argument("collection", help="collection NAME (see `encoderkit index`) or its folder")
    p.add_argument("--pairs", required=True,
                   help="a BEIR folder (qrels/SPLIT.tsv), a .jsonl of {query, positive} or a query<TAB>positive .tsv")
    p.add_argument("-o", "--output", dest="out", default=None, metavar="FILE", help="JSONL file to write (required)")
    hidden_alias(p, "--out", dest="out")  # the spelling before issue 17
    p.add_argument("--split", default="train", help="BEIR qrels split (default train)")
    p.add_argument("--store", metavar="DIR", help="directory holding collections (default $ENCODERKIT_HOME/collections)")
    p.add_argument("--mode", choices=("vector", "keyword", "hybrid"), default="vector",
                   help="how candidates are found: dense vectors, BM25 keywords or both (RRF); default vector")
    p.add_argument("-n", "--num-negatives", type=int, default=3, help="negatives per pair (default 3)")
    p.add_argument("--range-min", type=int, default=0, help="skip this many top-ranked candidates (default 0)")
    p.add_argument("--range-max", type=int, help="consider ranks below this (default: range-min + n, x10 with filters)")
    p.add_argument("--absolute-margin", type=float, help="keep c only if score(q,c) + M <= score(q, positive)")
    p.add_argument("--relative-margin", type=float, help="keep c only if score(q,c) <= score(q,p) - R x |score(q,p)|")
    p.add_argument("--max-score", type=float, help="drop candidates scoring above this")
    p.add_argument("--min-score", type=float, help="drop candidates scoring below this")
    p.add_argument("--sampling", choices=("top", "random"), default="top", help="which survivors to keep")
    p.add_argument("--cross-encoder", help="score candidates with this cross-encoder instead of the collection's model")
    p.add_argument("--scores", action="store_true", help='also write "scores": [positive, negatives...]')
    p.add_argument("--seed", type=int, default=0, help="seed of --sampling random (default 0)")
    p.add_argument("--limit", type=int, help="mine for the first N pairs only")
    add_json_flag(p)
    p.set_defaults(func=run_mine)


def run_mine(args) -> int:
    from pathlib import Path

    from encoderkit.store import Collection, collection_path
    from encoderkit.tasks.hard_negatives import mine_hard_negatives, read_pairs_file, write_jsonl

    for name in ("absolute_margin", "relative_margin", "max_score", "min_score"):
        v = getattr(args, name)
        if v is not None and not math.isfinite(v):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {v}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    if not args.out:
        raise ValueError("give -o/--output, the JSONL file to write")
    if Path(args.out).is_dir():
        raise ValueError(f"--output {args.out} is a directory; give a .jsonl file path")
    pairs = read_pairs_file(args.pairs, args.split)
    if args.limit:
        pairs = pairs[: args.limit]
    path = collection_path(args.collection, args.store)
    if not (path / "collection.db").exists():
        raise FileNotFoundError(f"no collection {args.collection!r} at {path}; create it with "
                                f"`encoderkit index create {args.collection} --model MODEL` and fill it")
    col = Collection.open(path, create=False)
    try:
        records, stats = mine_hard_negatives(
            col, pairs, mode=args.mode, num_negatives=args.num_negatives, range_min=args.range_min,
            range_max=args.range_max, absolute_margin=args.absolute_margin, relative_margin=args.relative_margin,
            max_score=args.max_score, min_score=args.min_score, sampling=args.sampling, seed=args.seed,
            cross_encoder=args.cross_encoder, scores=args.scores, progress=None if sys.stderr.isatty() else False)
    finally:
        col.close()
    write_jsonl(records, args.out)
    summary = {"out": str(args.out), **stats.to_dict()}
    if args.json:
        emit_json(summary)
    else:
        print(f"wrote {stats.written} of {stats.pairs} pairs ({stats.queries} queries) with {args.num_negatives} "
              f"negatives each to {args.out}; {stats.short} pairs lacked enough candidates")
    return 0
