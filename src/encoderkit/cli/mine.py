"""`encoderkit mine`: hard negatives for (query, positive) pairs from a collection, written as JSONL lines
{"query", "positive", "negatives": [...]} (the input of contrastive training with hard negatives)."""
from __future__ import annotations

import math
import sys

from encoderkit.cli._common import add_json_flag, emit_json, hidden_alias


def register(sub) -> None:
    p = sub.add_parser("mine", help="mine hard negatives for query/positive pairs from a collection (JSONL out)")
    p.add_argument("collection", nargs="?", help="collection NAME (see `encoderkit index`) or its folder")
    p.add_argument("--pairs",
                   help="a BEIR folder (qrels/SPLIT.tsv), a .jsonl of {query, positive} or a query<TAB>positive .tsv")
    p.add_argument("--rescore", metavar="MINED",
                   help="mine nothing: add the --cross-encoder's \"scores\" [positive, negatives...] to the records "
                        "of this JSONL (a teacher for train retrieval --loss margin-mse / kl); no collection")
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
    if args.rescore:
        return _rescore(args)
    if not args.collection or not args.pairs:
        raise ValueError("give a COLLECTION and --pairs to mine (or --rescore MINED --cross-encoder CE)")
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


def _rescore(args) -> int:
    """--rescore: the cross-encoder's logits of each record's (query, positive) and (query, negative) pairs."""
    from pathlib import Path

    from encoderkit.tasks.hard_negatives import write_jsonl
    from encoderkit.tasks.rerank import CrossEncoder
    from encoderkit.train.recipes.cross_encoder import read_mined

    if not args.cross_encoder:
        raise ValueError("--rescore needs --cross-encoder, the model whose scores are written")
    if args.collection or args.pairs:
        raise ValueError("--rescore reads its records from MINED: drop the collection and --pairs")
    if Path(args.out).resolve() == Path(args.rescore).resolve():
        raise ValueError("--output must differ from --rescore's input file")
    records = read_mined(args.rescore)
    if args.limit:
        records = records[: args.limit]
    records = score_records(CrossEncoder.load(args.cross_encoder), records)
    write_jsonl(records, args.out)
    pairs = sum(1 + len(r["negatives"]) for r in records)
    if args.json:
        emit_json({"out": str(args.out), "records": len(records), "pairs_scored": pairs})
    else:
        print(f"wrote {len(records)} records with {pairs} cross-encoder scores to {args.out}")
    return 0


def score_records(cross_encoder, records: list[dict], batch_size: int = 32) -> list[dict]:
    """Copies of {"query", "positive", "negatives"} records with "scores": the cross-encoder's relevance of the
    positive, then of each negative, as CrossEncoder.score gives it (replacing any scores they had)."""
    import numpy as np

    pairs = [(r["query"], d) for r in records for d in (r["positive"], *r["negatives"])]
    z = cross_encoder.logits(pairs, batch_size)
    if z.shape[1] == 1:
        flat = z[:, 0]
    else:  # as CrossEncoder.score: the positive label's softmax probability
        e = np.exp(z - z.max(1, keepdims=True))
        flat = (e / e.sum(1, keepdims=True))[:, cross_encoder.positive_label]
    out, start = [], 0
    for r in records:
        n = 1 + len(r["negatives"])
        out.append({**r, "scores": [float(v) for v in flat[start:start + n]]})
        start += n
    return out
