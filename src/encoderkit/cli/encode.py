"""`encoderkit encode` and `encoderkit info`."""
from __future__ import annotations

import sys
import time

from encoderkit.cli._common import add_json_flag, emit_json

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def register(sub) -> None:
    p = sub.add_parser("encode", help="encode texts from a file (or stdin) into vectors")
    p.add_argument("input", nargs="+", help="a .txt (one text per line), .jsonl, .csv file, or - for stdin "
                   "(several files with --engine ray)")
    p.add_argument("-o", "--output", required=True, help="where to write vectors: .npy or .jsonl (.parquet with --engine ray)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process; ray: Ray Data with an actor pool (see --actors, --ray-address)")
    p.add_argument("--actors", type=int, default=2, help="Ray actors, each loads the model once (default 2)")
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster, e.g. ray://head:10001 (default: local)")
    p.add_argument("-m", "--model", default=DEFAULT_MODEL, help=f"model name or folder (default {DEFAULT_MODEL})")
    p.add_argument("--field", default="text", help="JSONL field holding the text (default: text)")
    p.add_argument("--column", default="text", help="CSV column holding the text (default: text)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="float32",
                   choices=["float32", "float16", "int8", "uint8", "binary", "ubinary"])
    p.add_argument("--compute", choices=["fp32", "bf16", "int8"], default="fp32",
                   help="compute precision: fp32 (exact, default), bf16, or int8 dynamic quantization (faster, "
                        "approximate; see benchmarks/encode_throughput.py for the cosine to fp32)")
    p.add_argument("--dimensions", type=int, default=None, help="keep the first N dimensions (Matryoshka)")
    p.add_argument("--prompt", default=None, help="text prefix for every input (e.g. 'query: ')")
    norm = p.add_mutually_exclusive_group()
    norm.add_argument("--normalize", dest="normalize", action="store_true", default=None)
    norm.add_argument("--no-normalize", dest="normalize", action="store_false")
    p.add_argument("--no-truncate", action="store_true", help="fail on inputs longer than the model's limit")
    add_json_flag(p)
    p.set_defaults(func=run_encode)

    q = sub.add_parser("info", help="describe a model: family, layers, sizes, pooling")
    q.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    add_json_flag(q)
    q.set_defaults(func=run_info)


def run_encode(args) -> int:
    import encoderkit
    from encoderkit.io import read_inputs, write_vectors

    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    if args.engine == "ray":
        if args.compute != "fp32":
            raise ValueError("--compute applies to the local engine; the Ray engine encodes in fp32")
        from encoderkit.distributed.ray_encode import ray_encode

        summary = ray_encode(args.model, args.input, args.output, field=args.field, column=args.column,
                             actors=args.actors, encode_batch_size=args.batch_size, normalize=args.normalize,
                             address=args.ray_address)
        if args.json:
            emit_json(summary)
        else:
            print(f"encoded {summary['count']} texts -> {summary['output']} with {summary['actors']} Ray actors in "
                  f"{summary['seconds']:.2f}s: {summary['texts_per_second']} texts/s", file=sys.stderr)
        return 0
    if len(args.input) != 1:
        raise ValueError("the local engine takes one input file (use --engine ray for several)")
    records = read_inputs(args.input[0], field=args.field, column=args.column)
    enc = encoderkit.load(args.model, compute=args.compute)
    t0 = time.perf_counter()
    vectors = enc.encode(records.texts, batch_size=args.batch_size, normalize=args.normalize,
                         precision=args.precision, dimensions=args.dimensions, prompt=args.prompt,
                         truncate=not args.no_truncate, progress=None if not args.json else False)
    seconds = time.perf_counter() - t0
    out = write_vectors(args.output, vectors, records)
    summary = {"count": len(records.texts), "dim": int(vectors.shape[1]) if vectors.ndim == 2 else 0,
               "dtype": str(vectors.dtype), "model": enc.name, "seconds": round(seconds, 3),
               "texts_per_second": round(len(records.texts) / seconds, 1) if seconds > 0 else None,
               "output": str(out)}
    if args.json:
        emit_json(summary)
    else:
        print(f"encoded {summary['count']} texts -> {out} ({summary['dim']} dims, {summary['dtype']}) in "
              f"{seconds:.2f}s: {summary['texts_per_second']} texts/s", file=sys.stderr)
    return 0


def run_info(args) -> int:
    import encoderkit

    info = encoderkit.load(args.model).info()
    if args.json:
        emit_json(info)
    else:
        width = max(len(k) for k in info)
        for k, v in info.items():
            print(f"{k:<{width}}  {v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"{k:<{width}}  {v}")
    return 0
