"""`encoderkit eval beir PATH` and `encoderkit eval sts PATH`: retrieval and similarity benchmarks."""
from __future__ import annotations

from encoderkit.cli._common import add_json_flag, emit_json


def register(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate a model on a BEIR folder or the STS Benchmark")
    esub = ev.add_subparsers(dest="eval_command", metavar="BENCHMARK")
    ev.set_defaults(func=lambda args: (ev.print_help(), 2)[1])

    p = esub.add_parser("beir", help="NDCG@10, Recall@100, MRR@10, MAP@100 on a BEIR folder")
    p.add_argument("path", help="folder with corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    p.add_argument("-m", "--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--mode", default="vector", choices=["vector", "keyword", "hybrid"])
    p.add_argument("--split", default="test")
    p.add_argument("--rerank", metavar="MODEL", help="cross-encoder reranking the top --rerank-top")
    p.add_argument("--rerank-top", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=64)
    add_json_flag(p)
    p.set_defaults(func=cmd_beir)

    p = esub.add_parser("sts", help="Spearman of cosine vs gold on STS Benchmark pairs")
    p.add_argument("path", help="an sts-*.csv file or the stsbenchmark folder (uses sts-test.csv)")
    p.add_argument("-m", "--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--batch-size", type=int, default=64)
    add_json_flag(p)
    p.set_defaults(func=cmd_sts)


def _print(result: dict) -> None:
    for key, value in result.items():
        print(f"{key:12s} {value:.4f}" if isinstance(value, float) else f"{key:12s} {value}")


def cmd_beir(args) -> int:
    import encoderkit
    from encoderkit.evaluate.beir import evaluate_beir

    enc = encoderkit.load(args.model)
    opts = {}
    if args.rerank:
        opts = {"rerank": args.rerank, "rerank_top": args.rerank_top}
    result = evaluate_beir(args.path, enc, mode=args.mode, split=args.split, batch_size=args.batch_size,
                           progress=None if not args.json else False, **opts)
    result = {"model": enc.name, **result}
    emit_json(result) if args.json else _print(result)
    return 0


def cmd_sts(args) -> int:
    import encoderkit
    from encoderkit.evaluate.sts import evaluate_sts

    enc = encoderkit.load(args.model)
    result = {"model": enc.name, **evaluate_sts(args.path, enc, batch_size=args.batch_size,
                                                progress=None if not args.json else False)}
    emit_json(result) if args.json else _print(result)
    return 0
