"""`encoderkit eval beir PATH` and `encoderkit eval sts PATH`: retrieval and similarity benchmarks."""
from __future__ import annotations

from pathlib import Path

from encoderkit.cli._common import add_json_flag, emit_json


def register(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate a model on a BEIR folder or the STS Benchmark")
    esub = ev.add_subparsers(dest="eval_command", metavar="BENCHMARK")
    ev.set_defaults(func=lambda args: (ev.print_help(), 2)[1])

    p = esub.add_parser("beir", help="NDCG@10, Recall@100, MRR@10, MAP@100 on a BEIR folder")
    p.add_argument("path", help="folder with corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    p.add_argument("-m", "--model", default="sentence-transformers/all-MiniLM-L6-v2",
                   help="model name or folder (default all-MiniLM-L6-v2)")
    p.add_argument("--mode", default="vector", type=_modes,
                   help="vector, keyword or hybrid; several comma-separated (e.g. vector,keyword,hybrid) or 'all' "
                        "encode the corpus once and compare; late: exact MaxSim over token vectors (a ColBERT folder's, "
                        "or a plain model's own), on its own; sparse: exact dot products of a SPLADE / sparse "
                        "model's vectors (with their mean active dimensions), on its own")
    p.add_argument("--plot", metavar="PNG", help="write a bar chart of the metrics per mode")
    p.add_argument("--split", default="test", help="qrels split to score (default test)")
    p.add_argument("--rerank", metavar="MODEL", help="cross-encoder reranking the top --rerank-top")
    p.add_argument("--rerank-top", type=int, default=50, help="candidates given to the reranker (default 50)")
    p.add_argument("--rerank-weight", type=float, default=1.0,
                   help="the cross-encoder's weight fused with the first-stage score, both z-normalized over the "
                        "reranked hits (default 1: the cross-encoder alone)")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")
    p.add_argument("--dimensions", type=_dims, metavar="LIST",
                   help="Matryoshka widths, e.g. 64,128,256,384: exact vector search on the first d dimensions of "
                        "each vector (renormalized), one result per width from one encoding of the corpus")
    p.add_argument("--compute", choices=COMPUTE, default="fp32",
                   help="how the model computes: fp32 (default), the exact onnx / openvino / auto, or bf16 / int8")
    p.add_argument("--ignore-identical-ids", action="store_true",
                   help="drop a retrieved document whose id equals the query id (as MTEB does for ArguAna-style "
                        "sets, where each query is also a corpus document)")
    add_json_flag(p)
    p.set_defaults(func=cmd_beir)

    p = esub.add_parser("sts", help="Spearman of cosine vs gold on scored sentence pairs (STS Benchmark or any file)")
    p.add_argument("path", help="a pairs file: .tsv / .csv with a header row, .jsonl, an STS Benchmark sts-*.csv, "
                                "or the stsbenchmark folder (uses sts-test.csv)")
    p.add_argument("--sentence1", default=None, metavar="COLUMN", help="first text's column (default sentence1)")
    p.add_argument("--sentence2", default=None, metavar="COLUMN", help="second text's column (default sentence2)")
    p.add_argument("--score", default=None, metavar="COLUMN",
                   help="gold score's column (default score); any range (0-5, 0-1, 1-10...): Spearman is rank-based")
    p.add_argument("-m", "--model", default="sentence-transformers/all-MiniLM-L6-v2",
                   help="model name or folder (default all-MiniLM-L6-v2)")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")
    add_json_flag(p)
    p.set_defaults(func=cmd_sts)


MODES = ("vector", "keyword", "hybrid")
LATE = "late"  # exact in-memory MaxSim (evaluate.beir.late_run): not a collection mode here, so alone and not in 'all'
SPARSE = "sparse"  # exact in-memory sparse dot products (evaluate.beir.sparse_run): alone too, not in 'all'
ALONE = (LATE, SPARSE)
COMPUTE = ("fp32", "bf16x3", "bf16", "int8", "onnx", "openvino", "auto")


def _dims(value: str) -> list[int]:
    try:
        dims = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        dims = []
    if not dims or any(d < 1 for d in dims):
        import argparse

        raise argparse.ArgumentTypeError(f"--dimensions takes comma-separated positive integers, got {value!r}")
    return dims


def _modes(value: str) -> list[str]:
    modes = list(MODES) if value == "all" else [m.strip() for m in value.split(",") if m.strip()]
    alone = [m for m in modes if m in ALONE]
    if alone and len(modes) > 1:
        import argparse

        raise argparse.ArgumentTypeError(f"--mode {alone[0]} runs on its own (exact search in memory); evaluate other "
                                         "modes in a second run")
    bad = [m for m in modes if m not in MODES + ALONE]
    if bad or not modes:
        import argparse

        raise argparse.ArgumentTypeError(f"unknown mode {', '.join(bad) or value!r}; choose from "
                                         f"{', '.join(MODES + ALONE)} or all")
    return modes


def plot_metrics(results: list[dict], path: str, title: str = "") -> str:
    """Grouped bar chart: one group per metric, one bar per mode (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [k for k, v in results[0].items() if "@" in k and isinstance(v, float)]
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(metrics), 4))
    width = 0.8 / len(results)
    for j, r in enumerate(results):
        xs = [i + (j - (len(results) - 1) / 2) * width for i in range(len(metrics))]
        bars = ax.bar(xs, [r[m] for m in metrics], width, label=r["mode"])
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(title="mode")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _print(result: dict) -> None:
    """One `key  value` line each: metrics to 4 decimals, times as seconds ("seconds 43.8", not 43.8000), counts
    with thousands separators, lists as plain text."""
    for key, value in result.items():
        if key == "seconds" or key.endswith("_seconds"):
            text = f"{value:.1f} s" if isinstance(value, (int, float)) else str(value)
        elif isinstance(value, float):
            text = f"{value:.4f}"
        elif isinstance(value, int) and not isinstance(value, bool):
            text = f"{value:,}"
        elif isinstance(value, list):
            text = " – ".join(map(str, value)) if key.endswith("range") else ", ".join(map(str, value))
        else:
            text = str(value)
        print(f"{key:12s} {text}")


def cmd_beir(args) -> int:
    import encoderkit
    from encoderkit.evaluate.beir import beir_files, evaluate_beir

    if args.dimensions and (args.mode != ["vector"] or args.rerank or args.ignore_identical_ids):
        raise ValueError("--dimensions evaluates exact vector search only: drop --mode / --rerank / "
                         "--ignore-identical-ids, or --dimensions")
    if args.mode in ([LATE], [SPARSE]) and args.rerank:
        raise ValueError(f"--mode {args.mode[0]} scores every document exactly in memory; it takes no --rerank")
    beir_files(args.path, args.split)  # a wrong folder is reported before the model loads
    enc = encoderkit.load(args.model, compute=args.compute)
    if args.dimensions:
        from encoderkit.evaluate.beir import evaluate_beir_dimensions

        results = evaluate_beir_dimensions(args.path, enc, args.dimensions, split=args.split,
                                           batch_size=args.batch_size, progress=None if not args.json else False)
        results = [{"model": enc.name, **r} for r in results]
        if args.json:
            emit_json({"model": enc.name, "dimensions": results})
        else:
            for r in results:
                _print(r)
                print()
        return 0
    opts = {}
    if args.rerank:
        opts = {"rerank": args.rerank, "rerank_top": args.rerank_top, "rerank_weight": args.rerank_weight}
    progress = None if not args.json else False
    if len(args.mode) == 1:
        results = [evaluate_beir(args.path, enc, mode=args.mode[0], split=args.split, batch_size=args.batch_size,
                                 progress=progress, ignore_identical_ids=args.ignore_identical_ids, **opts)]
    else:  # several modes: encode the corpus once into a temporary collection, search it per mode
        import tempfile

        from encoderkit.evaluate.beir import load_beir
        from encoderkit.store import Collection

        data = load_beir(args.path, args.split)
        with tempfile.TemporaryDirectory() as tmp:
            col = Collection.open(tmp, enc)
            try:
                col.add(data.doc_texts(), ids=data.doc_ids(),
                        vectors=enc.encode(data.doc_texts(), batch_size=args.batch_size, normalize=True, progress=progress))
                results = [evaluate_beir(args.path, enc, mode=m, split=args.split, collection=col, progress=progress,
                                         ignore_identical_ids=args.ignore_identical_ids, **opts) for m in args.mode]
            finally:
                col.close()
    results = [{"model": enc.name, **r} for r in results]
    if args.plot:
        plot_metrics(results, args.plot, title=f"{Path(args.path).name} — {enc.name}")
    out = results[0] if len(results) == 1 else {"model": enc.name, "modes": results}
    if args.json:
        emit_json(out)
    else:
        for r in results:
            _print(r)
            print()
        if args.plot:
            print(f"chart written to {args.plot}")
    return 0


def cmd_sts(args) -> int:
    import encoderkit
    from encoderkit.evaluate.pairs import PairColumns, load_pairs
    from encoderkit.evaluate.sts import evaluate_sts

    named = (args.sentence1, args.sentence2, args.score)
    columns = None if named == (None, None, None) else PairColumns(
        *(given or default for given, default in zip(named, PairColumns().names())))
    load_pairs(args.path, columns)  # a wrong file or column fails before the model loads
    enc = encoderkit.load(args.model)
    result = {"model": enc.name, **evaluate_sts(args.path, enc, batch_size=args.batch_size,
                                                progress=None if not args.json else False, columns=columns)}
    emit_json(result) if args.json else _print(result)
    return 0
