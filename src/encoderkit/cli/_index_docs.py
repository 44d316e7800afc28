"""`encoderkit index get|peek|export`: read the documents of a collection back (what Chroma's get / peek do),
on either backend. Attached to the `index` command by cli/index.py."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from encoderkit.cli._common import add_json_flag, emit_json

EXPORT_FORMATS = ("jsonl", "parquet")


def register_docs(isub, name_help: str, store_flag: Callable, wrap: Callable, opener: Callable) -> None:
    """Add get / peek / export to the `index` subparsers. `opener(args)` opens the named collection;
    `wrap` is index.py's error wrapper (NAME as a collection URL, readable database errors)."""
    p = isub.add_parser("get", help="print documents by id (text and metadata)")
    p.add_argument("name", help=name_help)
    p.add_argument("ids", nargs="+", metavar="ID",
                   help="document ids, as search prints them (a chunked document is put back together from its "
                        "chunks; a chunk id is DOC#N)")
    store_flag(p)
    add_json_flag(p)
    p.set_defaults(func=wrap(lambda args: cmd_get(args, opener)))

    p = isub.add_parser("peek", help="the first documents of a collection (or of those matching --where)")
    p.add_argument("name", help=name_help)
    p.add_argument("-n", "--limit", type=int, default=5, help="documents to show (default 5)")
    p.add_argument("--where", help='only documents matching this metadata filter (JSON), e.g. \'{"year": 2020}\'')
    store_flag(p)
    add_json_flag(p)
    p.set_defaults(func=wrap(lambda args: cmd_peek(args, opener)))

    p = isub.add_parser("export", help="write every document (id, text, metadata; vectors with --vectors) to a file")
    p.add_argument("name", help=name_help)
    p.add_argument("-o", "--output", required=True, help="file to write, or - for stdout (jsonl only)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default=None,
                   help="jsonl (one JSON object per line) or parquet; default: from the --output extension, else jsonl")
    p.add_argument("--where", help="only documents matching this metadata filter (JSON)")
    p.add_argument("--vectors", action="store_true", help="also write each document's stored vector")
    store_flag(p)
    add_json_flag(p)
    p.set_defaults(func=wrap(lambda args: cmd_export(args, opener)))


def _where(args) -> Any:
    if not args.where:
        return None
    try:
        return json.loads(args.where)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--where is not valid JSON ({exc.msg} at column {exc.colno}): {args.where}") from None


def _doc(id_: str, text: str, metadata: Any) -> dict:
    return {"id": id_, "text": text, "metadata": json.loads(metadata) if isinstance(metadata, str) else metadata}


def iter_documents(col: Any, where: Any = None, limit: int | None = None, vectors: bool = False,
                   batch: int = 500) -> Iterator[dict]:
    """Documents in insertion order (those matching `where`), at most `limit`, each {id, text, metadata}
    (+ vector)."""
    rids = col.store.filter_rids(where)
    if limit is not None:
        rids = rids[:limit]
    for start in range(0, len(rids), batch):
        part = [int(r) for r in rids[start:start + batch]]
        rows = col.store.rows_by_rids(part)
        vecs: dict[int, Any] = {}
        if vectors:
            import numpy as np

            for got, X in col.store.iter_vectors(col.dim, np.asarray(part, dtype=np.int64)):
                vecs.update({int(r): x for r, x in zip(got, X)})
        for r in part:
            if r in rows:
                d = _doc(*rows[r][:3])
                if vectors:
                    d["vector"] = [float(v) for v in vecs[r]]
                yield d


def _print_docs(docs: list[dict]) -> None:
    term = shutil.get_terminal_size((120, 20)).columns
    for d in docs:
        print(d["id"])
        text = " ".join(d["text"].split())
        room = max(40, term - 2) * 3
        print("  " + (text if len(text) <= room else text[: room - 1] + "…"))
        if d["metadata"]:
            print("  " + json.dumps(d["metadata"], ensure_ascii=False))


def cmd_get(args, opener) -> int:
    col = opener(args)
    try:
        hits = [col.get_document(i) for i in args.ids]  # a chunked document's id: its chunks put back together
    finally:
        col.close()
    missing = [i for i, h in zip(args.ids, hits) if h is None]
    docs = [{"id": h.id, "text": h.text, "metadata": h.metadata} for h in hits if h is not None]
    if args.json:
        emit_json(docs)
    else:
        _print_docs(docs)
    for i in missing:
        print(f"encoderkit index get: no document {i!r} in {args.name!r} (`encoderkit index peek {args.name}` shows "
              "some ids)", file=sys.stderr)
    return 1 if missing else 0


def cmd_peek(args, opener) -> int:
    if args.limit < 1:
        raise ValueError("--limit must be at least 1")
    where = _where(args)
    col = opener(args)
    try:
        docs = list(iter_documents(col, where, args.limit))
        total = col.count(where)
        noun = _rows_noun(col)
    finally:
        col.close()
    if args.json:
        emit_json(docs)
        return 0
    if not docs:
        print(f"{args.name} has no documents" + (" matching --where" if where else "")
              + ("" if where else f"; add some with `encoderkit index add {args.name} FILE_OR_FOLDER`"))
        return 0
    _print_docs(docs)
    print(f"({len(docs)} of {total:,} {noun})", file=sys.stderr)
    return 0


def _rows_noun(col: Any) -> str:
    """What a stored row is called in messages: a chunked collection's rows are chunks, not documents."""
    return "chunks" if col.has_chunks() else "documents"


def _export_format(args) -> str:
    """The export format: --format, else the --output extension (.jsonl / .json / .parquet; - is jsonl). Any other
    extension is refused before the collection is read (a .csv must not silently hold JSON lines)."""
    if args.format:
        return args.format
    if args.output == "-":
        return "jsonl"
    suffix = Path(args.output).suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise ValueError(f"--output {args.output!r}: export writes .jsonl or .parquet (got {suffix or 'no extension'}); "
                     "give one of those or --format jsonl|parquet")


def cmd_export(args, opener) -> int:
    fmt = _export_format(args)
    if fmt == "parquet" and args.output == "-":
        raise ValueError("parquet cannot go to stdout; give --output FILE.parquet or --format jsonl")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError("--format parquet needs pyarrow (pip install pyarrow); or use --format jsonl") from None
    where = _where(args)
    col = opener(args)
    n = 0
    try:
        noun = _rows_noun(col)
        docs = iter_documents(col, where, vectors=args.vectors)
        if fmt == "jsonl":
            n = _write_jsonl(args.output, docs)
        else:
            n = _write_parquet(args.output, docs)
    finally:
        col.close()
    out = {"documents": n, "output": args.output, "format": fmt}
    if args.json:
        emit_json(out)
    else:
        print(f"exported {n:,} {noun} of {args.name} -> {args.output} ({fmt})", file=sys.stderr)
    return 0


def _write_jsonl(path: str, docs: Iterator[dict]) -> int:
    n = 0
    if path == "-":
        for d in docs:
            sys.stdout.write(json.dumps(d, ensure_ascii=False) + "\n")
            n += 1
        return n
    target = Path(path).expanduser()
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps(d, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(target)  # never a half-written export
    return n


def _write_parquet(path: str, docs: Iterator[dict]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{**d, "metadata": json.dumps(d["metadata"], ensure_ascii=False)} for d in docs]
    target = Path(path).expanduser()
    tmp = target.with_name(target.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(rows) if rows else pa.table({"id": [], "text": [], "metadata": []}), tmp)
    tmp.replace(target)
    return len(rows)
