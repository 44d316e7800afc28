"""`encoderkit encode` and `encoderkit info`."""
from __future__ import annotations

import sys
import time

from encoderkit.cli._common import add_json_flag, emit_json, hidden_alias

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def register(sub) -> None:
    p = sub.add_parser("encode", help="encode texts from a file (or stdin) into vectors")
    p.add_argument("input", nargs="+", help="a .txt (one text per non-blank line; `index add` reads a .txt as one "
                   "document unless --lines), .jsonl, .csv file, or - for stdin (several files with --engine ray)")
    p.add_argument("-o", "--output", required=True, help="where to write vectors: .npy or .jsonl (.parquet with --engine ray)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process; ray: Ray Data with an actor pool (see --actors, --ray-address)")
    p.add_argument("--actors", type=int, default=2, help="Ray actors, each loads the model once (default 2)")
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster, e.g. ray://head:10001 (default: local)")
    p.add_argument("-m", "--model", default=DEFAULT_MODEL, help=f"model name or folder (default {DEFAULT_MODEL})")
    p.add_argument("--text-field", default="text", metavar="FIELD",
                   help="JSONL key / CSV column holding the text (default: text), as for `index add`")
    hidden_alias(p, "--field", "--column", dest="text_field")  # the spellings before issue 17
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    p.add_argument("--precision", default="float32",
                   choices=["float32", "float16", "int8", "uint8", "binary", "ubinary"],
                   help="stored vector type (default float32); int8/uint8 bucket each dimension, binary packs sign "
                        "bits 8 per byte")
    p.add_argument("--compute", choices=["fp32", "bf16x3", "bf16", "int8", "onnx", "openvino", "auto"], default="fp32",
                   help="compute precision: fp32 (exact, default), bf16, or int8 dynamic quantization (faster, "
                        "approximate; see benchmarks/encode_throughput.py for the cosine to fp32); onnx / openvino: "
                        "exact, the backbone exported and run by ONNX Runtime / OpenVINO; bf16x3: exact, linear "
                        "layers on AMX-BF16 (Intel Sapphire Rapids+); auto: the fastest exact path here")
    p.add_argument("--dimensions", type=int, default=None, help="keep the first N dimensions (Matryoshka)")
    p.add_argument("--prompt", default=None, help="text prefix for every input (e.g. 'query: ')")
    norm = p.add_mutually_exclusive_group()
    norm.add_argument("--normalize", dest="normalize", action="store_true", default=None,
                      help="unit-length vectors (default: what the model's pipeline says)")
    norm.add_argument("--no-normalize", dest="normalize", action="store_false", help="raw pooled vectors")
    p.add_argument("--no-truncate", action="store_true", help="fail on inputs longer than the model's limit")
    p.add_argument("--title-field", metavar="FIELD", help="embed this JSONL/CSV field before the text: the same as "
                                                           "--template '{FIELD} {text}'")
    p.add_argument("--template", metavar="TEXT", help="what is embedded, from each record's fields, e.g. "
                                                      "'{title} {text}' ({text} is the --text-field)")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")
    add_json_flag(p)
    p.set_defaults(func=run_encode)

    q = sub.add_parser("info", help="describe a model: family, layers, sizes, pooling")
    q.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"model name or folder (default {DEFAULT_MODEL})")
    q.add_argument("--compute", choices=["fp32", "bf16x3", "bf16", "int8", "onnx", "openvino", "auto"], default="fp32",
                   help="show the model as loaded with this compute mode (the engine is named in the output)")
    add_json_flag(q)
    q.set_defaults(func=run_info)


def run_encode(args) -> int:
    import encoderkit
    from encoderkit.io import read_inputs, write_vectors

    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    _check_output(args)  # before any model loads or text is encoded
    template = _template(args)
    if args.engine == "ray":
        if template is not None:
            raise ValueError("--title-field / --template apply to the local engine")
        if args.compute != "fp32":
            raise ValueError("--compute applies to the local engine; the Ray engine encodes in fp32")
        from encoderkit.distributed.ray_encode import ray_encode

        summary = ray_encode(args.model, args.input, args.output, field=args.text_field, column=args.text_field,
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
    records = read_inputs(args.input[0], field=args.text_field, column=args.text_field, template=template)
    enc = encoderkit.load(args.model, compute=args.compute)
    if args.dimensions is not None and not 0 < args.dimensions <= enc.dim:
        raise ValueError(f"--dimensions must be between 1 and {enc.dim} for {enc.name}, got {args.dimensions}")
    t0 = time.perf_counter()
    vectors = enc.encode(records.texts, batch_size=args.batch_size, normalize=args.normalize,
                         precision=args.precision, dimensions=args.dimensions, prompt=args.prompt,
                         truncate=not args.no_truncate,
                         progress=True if args.progress else (False if args.json else None))
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


OUTPUTS = {"local": (".npy", ".jsonl"), "ray": (".parquet",)}


def _check_output(args) -> None:
    """The output's format and folder are checked before any work: a bad one must not cost an encoding run."""
    from pathlib import Path

    out = Path(args.output).expanduser()
    allowed = OUTPUTS[args.engine]
    if out.suffix.lower() not in allowed:
        raise ValueError(f"--output {args.output!r}: the {args.engine} engine writes {' or '.join(allowed)} "
                         f"(got {out.suffix or 'no extension'}); nothing was encoded")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--output {args.output!r}: folder {str(out.parent)!r} does not exist; nothing was "
                                "encoded")
    if args.dimensions is not None and args.dimensions < 1:
        raise ValueError("--dimensions must be at least 1")


def _template(args) -> str | None:
    if args.title_field and args.template:
        raise ValueError("give --title-field or --template, not both (--title-field F is --template '{F} {text}')")
    if args.title_field:
        from encoderkit.io import title_template

        return title_template(args.title_field)
    return args.template


def run_info(args) -> int:
    import encoderkit

    info = encoderkit.load(args.model, compute=args.compute).info()
    if args.json:
        emit_json(info)
    else:
        width = max(len(k) for k in info)
        for k, v in info.items():
            print(f"{k:<{width}}  {v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"{k:<{width}}  {v}")
    return 0
