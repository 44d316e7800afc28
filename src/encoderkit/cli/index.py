"""`encoderkit index create|add|info|delete|list`, `encoderkit search`, `encoderkit dedup`: persistent
collections by name ($ENCODERKIT_HOME/collections/NAME, or --store DIR, or a path), or in a PostgreSQL database
with pgvector: --store postgresql://user@host:port/db and NAME (or NAME = postgresql://...?collection=NAME)."""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

from encoderkit.cli._common import add_json_flag, emit_json

PG_SCHEMES = ("postgresql://", "postgres://")
NAME_HELP = "collection name (under --store), or a postgresql://...?collection=NAME URL"


def _store_flag(p) -> None:
    p.add_argument("--store", metavar="DIR|URL",
                   help="directory holding collections (default $ENCODERKIT_HOME/collections or "
                        "~/.encoderkit/collections), or a PostgreSQL database: postgresql://user@host:port/db")


def _is_pg(value) -> bool:
    return isinstance(value, str) and value.startswith(PG_SCHEMES)


def _pg(args) -> tuple[str, str, str] | None:
    """(collection URL, store URL, name) when the collection is in PostgreSQL (--store URL and NAME); None for an
    embedded collection."""
    if _is_pg(args.store):
        from encoderkit.store.pg_store import collection_url

        return collection_url(args.store, args.name), args.store, args.name
    return None


def _split_collection_url(args) -> None:
    """NAME given as postgresql://...?collection=NAME: the same as --store postgresql://... NAME (so no message
    ever shows the URL's password)."""
    if _is_pg(getattr(args, "name", None)):
        from encoderkit.store.pg_store import parse_url, redact

        if args.store is not None:
            raise ValueError(f"give either --store and a collection NAME, or a collection URL "
                             f"({redact(args.name)}), not both")
        args.store, args.name = parse_url(args.name)


def _where(args) -> str:
    """Where the collection is, for messages (never a password)."""
    pg = _pg(args)
    if pg is None:
        from encoderkit.store import collection_path

        return f"at {collection_path(args.name, args.store)}"
    from encoderkit.store.pg_store import redact

    return f"in {redact(pg[1])}"


def _exists(args) -> bool:
    pg = _pg(args)
    if pg is None:
        from encoderkit.store import collection_path

        return (collection_path(args.name, args.store) / "collection.db").exists()
    from encoderkit.store.pg_store import PgStore

    store = PgStore(pg[0])
    try:
        return "model" in store.meta()
    finally:
        store.close()


def _create_hint(args) -> str:
    """The command that creates this collection, for 'no collection' messages."""
    pg = _pg(args)
    if pg is None:
        store = f" --store {args.store}" if args.store else ""
        return f"`encoderkit index create {args.name}{store} --model MODEL`"
    from encoderkit.store.pg_store import redact

    return f"`encoderkit index create {pg[2]} --store {redact(pg[1])} --model MODEL`"


def _database_errors(fn):
    """Takes NAME as a collection URL too; a PostgreSQL connection or driver failure becomes one readable line
    (main prints RuntimeError)."""
    @functools.wraps(fn)
    def run(args):
        try:
            _split_collection_url(args)
            return fn(args)
        except ConnectionError as exc:
            raise RuntimeError(str(exc)) from exc
        except Exception as exc:
            psycopg = sys.modules.get("psycopg")
            if psycopg is not None and isinstance(exc, psycopg.Error):
                raise RuntimeError(f"PostgreSQL: {' '.join(str(exc).split()) or type(exc).__name__}") from exc
            raise
    return run


def register(sub) -> None:
    idx = sub.add_parser("index", help="create, fill, inspect and delete persistent collections")
    isub = idx.add_subparsers(dest="index_command", metavar="ACTION")
    idx.set_defaults(func=lambda args: (idx.print_help(), 2)[1])

    p = isub.add_parser("create", help="create an empty collection for a model")
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("-m", "--model", default="sentence-transformers/all-MiniLM-L6-v2",
                   help="model name or folder whose vectors the collection holds (default all-MiniLM-L6-v2)")
    p.add_argument("--index", default="Flat", help="FAISS factory string: Flat (exact), HNSW32, IVF1024,PQ16")
    p.add_argument("--metric", default="cosine", choices=["cosine", "ip", "l2"], help="vector similarity (default cosine)")
    from encoderkit.cli._kinds_options import add_create_options, add_search_options

    add_create_options(p)
    _store_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_create)

    p = isub.add_parser("add", help="ingest files or directories (.txt .md .jsonl .csv; images with a CLIP model)",
                        description="Add documents: a .txt or .md file is ONE document (long ones are chunked; "
                                    "--lines makes each non-blank line a document, as `encoderkit encode` reads it), "
                                    ".jsonl one per line, .csv one per row; folders recursively. The collection's "
                                    "own model embeds them.")
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (.txt .md .jsonl .csv; images for a "
                                                           "CLIP collection)")
    p.add_argument("-m", "--model", help="only needed to create the collection on first add (an existing collection "
                                         "uses the model it records); with an image-text model (CLIP, SigLIP) image "
                                         "files are embedded by its image tower and text queries use its text tower")
    p.add_argument("--lines", action="store_true", help=".txt/.md files hold one document per non-blank line "
                                                        "(default: each file is one document, chunked when long)")
    p.add_argument("--title-field", metavar="FIELD", help="embed this JSONL/CSV field before the text: the same as "
                                                           "--template '{FIELD} {text}'")
    p.add_argument("--template", metavar="TEXT", help="the text stored and embedded, from the record's fields, e.g. "
                                                      "'{title} {text}' ({text} is the --text-field)")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")
    p.add_argument("--chunk-tokens", type=int, default=None, help="tokens per chunk (default: model max - 2; 0: no split)")
    p.add_argument("--overlap", type=int, default=32, help="tokens shared by consecutive chunks (default 32)")
    p.add_argument("--late-chunking", action="store_true",
                   help="embed each chunk of a long document from one pass over the document (the model's window; "
                        "longer documents in passes of chunks with the text around them), so chunks keep their "
                        "context; chunks default to min(128, window/2) tokens")
    p.add_argument("--context-tokens", type=int, metavar="N",
                   help="with --late-chunking: tokens per pass (default the model's max length; up to what its "
                        "position embeddings hold, e.g. 512 for all-MiniLM-L6-v2)")
    p.add_argument("--batch-size", type=int, default=256, help="documents per committed batch (default 256)")
    p.add_argument("--text-field", default="text", help="JSONL key / CSV column holding the text")
    p.add_argument("--id-field", default="id", help="JSONL key / CSV column holding the id")
    _store_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_add)

    from encoderkit.cli._index_docs import register_docs

    register_docs(isub, NAME_HELP, _store_flag, _database_errors, lambda args: _open(args))
    from encoderkit.cli._index_backup import register_backup

    register_backup(isub, NAME_HELP, _store_flag, _database_errors, lambda args: _open(args),
                    lambda args: _pg(args) is not None)

    p = isub.add_parser("info", help="model, index, size and an integrity check of a collection")
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("--check", action="store_true", help="also verify that table, FTS and vector index agree")
    _store_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_info)

    p = isub.add_parser("delete", help="delete a whole collection, or documents of it (--ids / --where / --all)")
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("--ids", nargs="+", help="delete only these documents")
    p.add_argument("--where", help="delete only documents matching this metadata filter (JSON; '{}' is refused: "
                                   "use --all)")
    p.add_argument("--all", action="store_true", help="delete every document but keep the (empty) collection")
    _store_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_delete)

    p = isub.add_parser("list", help="the collections in the store directory or PostgreSQL database (--store)")
    _store_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("search", help="search a collection: vector, keyword, sparse, late or hybrid, with filters and "
                                      "reranking")
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("query", help="what to look for, in words (an image collection is searched by its text tower)")
    p.add_argument("-k", type=int, default=10, help="results (default 10)")
    p.add_argument("--mode", default=None, choices=["vector", "keyword", "sparse", "late", "hybrid"],
                   help="default hybrid (fusing every list the collection has); vector for image collections (their "
                        "text is only the file name); sparse / late for collections holding those kinds")
    p.add_argument("--where", help='metadata filter as JSON, e.g. \'{"year": {"$gte": 2020}}\'')
    p.add_argument("--rerank", metavar="MODEL", help="cross-encoder to rerank the top candidates")
    p.add_argument("--rerank-top", type=int, default=50, help="candidates given to the reranker (default 50)")
    p.add_argument("--rerank-weight", type=float, default=1.0,
                   help="the cross-encoder's weight fused with the first-stage score, both z-normalized over the "
                        "reranked hits (default 1: the cross-encoder alone)")
    p.add_argument("--fusion", default="rrf", choices=["rrf", "weighted"], help="hybrid fusion (default rrf, k=60)")
    p.add_argument("--alpha", type=float, default=0.5, help="vector weight for --fusion weighted")
    p.add_argument("--chunks", action="store_true", help="list matching chunks; by default a document split into "
                                                         "chunks is listed once, by its best chunk")
    add_search_options(p)
    _store_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("dedup", help="groups of near-duplicate documents (cosine >= threshold)")
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("--threshold", type=float, default=0.95, help="cosine at or above which two documents are "
                                                                  "near-duplicates (default 0.95)")
    p.add_argument("--neighbors", type=int, default=16, help="neighbours asked per document (doubled when all pass)")
    _store_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_dedup)


def _open(args, must_exist: bool = True, encoder=None, **kw):
    from encoderkit.store import Collection, collection_path

    pg = _pg(args)
    if pg is not None:
        try:
            return Collection.open(pg[0], encoder, create=not must_exist, **kw)
        except FileNotFoundError:
            raise FileNotFoundError(f"no collection {pg[2]!r} {_where(args)}; create it with "
                                    f"{_create_hint(args)}") from None
    path = collection_path(args.name, args.store)
    if must_exist and not (path / "collection.db").exists():
        raise FileNotFoundError(f"no collection {args.name!r} at {path}; create it with {_create_hint(args)}")
    return Collection.open(path, encoder, **kw)


@_database_errors
def cmd_create(args) -> int:
    from encoderkit.cli._kinds_options import create_kinds, kinds_encoder

    kinds = create_kinds(args)
    if _pg(args) is None and args.index:  # an unparseable index string fails before the model loads
        from encoderkit.store.faiss_index import check_factory_syntax

        check_factory_syntax(args.index)
    if _exists(args):
        raise ValueError(f"collection {args.name!r} already exists {_where(args)}; use `encoderkit index add` to "
                         "fill it or `encoderkit index delete` first")
    col = _open(args, must_exist=False, encoder=kinds_encoder(args.model, kinds), index=args.index, metric=args.metric,
                kinds=kinds, late_index=args.late_index)
    info = col.info()
    col.close()
    if args.json:
        emit_json(info)
    else:
        print(f"created {args.name} at {info['path']}: model {info['model']} (dim {info['dim']}), "
              f"index {info['index']}, metric {info['metric']}, kinds {','.join(info['kinds'])}")
    return 0


def _image_tower(model: str):
    """The image tower of an image-text model, or None for a text-only model."""
    import encoderkit

    enc = encoderkit.load(model)
    if "image" not in getattr(getattr(enc, "family", None), "towers", ()):
        return enc, None
    return enc, encoderkit.load(model, modality="image")


@_database_errors
def cmd_add(args) -> int:
    from encoderkit.cli._add_options import ingest_options, same_model
    from encoderkit.cli._kinds_options import check_late_chunking, context_encoder
    from encoderkit.store.images import ingest_images, is_image_collection

    template = ingest_options(args)
    check_late_chunking(args)
    exists = _exists(args)
    model = args.model
    if model is not None and Path(model).expanduser().exists():
        model = str(Path(model).expanduser().resolve())  # a folder: record where it is, not where we stood
    if not exists and model is None:
        raise FileNotFoundError(f"no collection {args.name!r} {_where(args)}; create it with {_create_hint(args)} "
                                "or pass --model")
    progress = True if args.progress else (False if args.json else None)
    image_enc = None
    if exists:  # the collection's own model; --model only has to agree with it (aliases resolved)
        col = _open(args)
        if model is not None and not same_model(model, col.model):
            col.close()
            raise ValueError(f"collection {args.name!r} was built with model {col.model!r}, not {args.model!r}; "
                             "drop --model (the collection knows its model) or create a new collection")
    else:  # everything checked before the collection is made
        text_enc, image_enc = _image_tower(model)
        if image_enc is not None and args.late_chunking:
            raise ValueError(f"{model} embeds images; --late-chunking chunks long texts")
        if args.context_tokens:
            text_enc = context_encoder(model, args.context_tokens)
        col = _open(args, must_exist=False, encoder=text_enc)
    try:
        if image_enc is None and exists and (is_image_collection(col) or "image" in getattr(
                getattr(col.encoder, "family", None), "towers", ())):
            _, image_enc = _image_tower(col.meta.get("image_model") or col.model)  # a CLIP collection takes images
        if image_enc is not None and args.late_chunking:
            raise ValueError(f"{args.name!r} is an image collection; --late-chunking chunks long texts")
        if args.context_tokens and exists:  # late chunking's passes: the collection's model, a wider window
            enc = context_encoder(col.model, args.context_tokens)
            col.close()
            col = _open(args, encoder=enc)
        if image_enc is not None:
            report = ingest_images(col, args.paths, image_enc, progress=progress)
        else:
            report = col.ingest(args.paths, chunk_tokens=args.chunk_tokens, overlap=args.overlap,
                                batch_size=args.batch_size, text_field=args.text_field, id_field=args.id_field,
                                lines=args.lines, template=template, progress=progress,
                                late_chunking=args.late_chunking)
        total, chunks = col.document_counts()
    finally:
        col.close()
    out = {**report.to_dict(), "documents": total, "chunks": chunks}
    if image_enc is not None:
        out["modality"] = "image"
    if args.json:
        emit_json(out)
    else:
        files = f"{report.files:,} file" + ("" if report.files == 1 else "s")
        print(f"{args.name}: {report.added:,} added, {report.unchanged:,} unchanged, {report.duplicates:,} duplicates "
              f"skipped, {report.chunked:,} documents chunked, from {files}; {total:,} documents "
              f"({chunks:,} chunks) in total")
        for p, why in report.errors:
            print(f"  skipped {p}: {why}", file=sys.stderr)
    return 1 if report.errors and not report.added and not report.unchanged else 0


@_database_errors
def cmd_info(args) -> int:
    col = _open(args)
    try:
        info = col.info()
        if args.check:
            info["check"] = col.check()
    finally:
        col.close()
    if args.json:
        emit_json(info)
    else:
        for key in ("path", "model", "dim", "metric", "index", "documents", "chunks"):
            print(f"{key:10s} {info[key]:,}" if isinstance(info[key], int) else f"{key:10s} {info[key]}")
        print(f"{'size':10s} {human_bytes(info['bytes'])}")
        if args.check:
            c = info["check"]
            print(f"{'check':10s} {'ok' if c['ok'] else 'FAILED'}")
            for prob in c["problems"]:
                print(f"  {prob}")
    return 0 if not args.check or info["check"]["ok"] else 1


@_database_errors
def cmd_delete(args) -> int:
    from encoderkit.store import collection_path

    if not _exists(args):
        raise FileNotFoundError(f"no collection {args.name!r} {_where(args)}")
    pg = _pg(args)
    if args.ids or args.where is not None or args.all:
        from encoderkit.store.validate import check_delete

        where = _where_json(args.where)
        check_delete(args.ids, where, args.all, "--all")  # an empty filter is refused: emptying takes --all
        col = _open(args)
        try:
            n = col.delete(args.ids, where=where, all=args.all)
            left = col.count()
        finally:
            col.close()
        out = {"deleted_documents": n, "documents": left}
    elif pg is not None:
        from encoderkit.store.pg_store import PgStore

        store = PgStore(pg[0])
        try:
            if not store.drop():  # dropped by someone else meanwhile
                raise FileNotFoundError(f"no collection {args.name!r} {_where(args)}")
        finally:
            store.close()
        out = {"deleted_collection": store.where}
    else:
        path = collection_path(args.name, args.store)
        for f in ("collection.db", "collection.db-wal", "collection.db-shm", "index.faiss", "index.json"):
            (path / f).unlink(missing_ok=True)
        for f in path.glob("*.tmp"):
            f.unlink()
        if not any(path.iterdir()):  # other files the user put there stay
            path.rmdir()
        out = {"deleted_collection": str(path)}
    if args.json:
        emit_json(out)
    else:
        print(", ".join(f"{k} {v}" for k, v in out.items()))
    return 0


def _where_json(text: str | None) -> dict | None:
    """--where parsed, or a one-line error naming the JSON problem."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--where is not valid JSON ({exc.msg} at column {exc.colno}): {text}") from None


@_database_errors
def cmd_list(args) -> int:
    from encoderkit.store import Collection, collection_path

    if _is_pg(args.store):
        return _list_pg(args)
    root = Path(args.store).expanduser() if args.store else collection_path("x").parent
    rows = []
    for d in sorted(root.iterdir()) if root.exists() else []:
        if (d / "collection.db").exists():
            try:
                col = Collection.open(d, create=False)
            except Exception as exc:  # one broken collection is listed as broken, never hides the others
                why = " ".join(str(exc).split()) or type(exc).__name__
                rows.append({"name": d.name, "path": str(d), "broken": why})
                continue
            try:
                rows.append({"name": d.name, **col.info()})
            finally:
                col.store.close()
    _print_list(args, rows, root)
    return 0


def _list_pg(args) -> int:
    from encoderkit.store.pg_collection import PgCollection
    from encoderkit.store.pg_store import DriverError, collection_url, list_collections, redact

    rows = []
    for name in list_collections(args.store):
        try:
            col = PgCollection.open_url(collection_url(args.store, name), create=False)
        except FileNotFoundError:  # dropped since it was listed
            continue
        except (ValueError, DriverError) as exc:  # one broken collection is listed as broken
            rows.append({"name": name, "broken": " ".join(str(exc).split()) or type(exc).__name__})
            continue
        try:
            rows.append({"name": name, **col.info()})
        finally:
            col.close()
    _print_list(args, rows, redact(args.store))
    return 0


def _print_list(args, rows: list[dict], root) -> None:
    if args.json:
        emit_json(rows)
    elif not rows:
        print(f"no collections in {root}")
    else:
        print(f"{'NAME':24s} {'DOCS':>8s} {'CHUNKS':>8s}  {'INDEX':10s} MODEL")
        for r in rows:
            if "broken" in r:
                print(f"{r['name']:24s} {'-':>8s} {'-':>8s}  {'BROKEN':10s} {r['broken']}")
            else:
                print(f"{r['name']:24s} {r['documents']:>8,d} {r['chunks']:>8,d}  {r['index']:10s} {r['model']}")


@_database_errors
def cmd_search(args) -> int:
    from encoderkit.cli._kinds_options import check_mode, search_options
    from encoderkit.store.images import is_image_collection

    opts = search_options(args)
    if args.where is not None:  # a bad filter fails before the collection opens and its model loads
        from encoderkit.store.where import compile_where

        compile_where(args.where)
    col = _open(args)
    try:
        mode = opts["mode"] or ("vector" if is_image_collection(col) else "hybrid")
        if is_image_collection(col) and mode in ("keyword", "hybrid"):
            raise ValueError(f"{args.name!r} is an image collection: its only text is each file's name, so "
                             f"--mode {mode} finds nothing; search it with --mode vector (the default)")
        check_mode(col, args.name, {**opts, "mode": mode})
        hits = col.search(args.query, k=args.k, mode=mode, where=args.where, rerank=args.rerank,
                          rerank_top=args.rerank_top, rerank_weight=args.rerank_weight, fusion=args.fusion,
                          alpha=args.alpha, modes=opts["modes"], weights=opts["weights"],
                          group_by_document=not args.chunks)
        names = col.score_names(args.fusion)
        why = None
        if not hits:
            from encoderkit.tasks.explain import explain_empty

            store = f" --store {args.store}" if args.store and not _is_pg(args.store) else ""
            why = explain_empty(col, where=args.where, mode=mode,
                                add_hint=f"`encoderkit index add {args.name}{store} FILE_OR_FOLDER`")
    finally:
        col.close()
    if args.json:
        if why:
            print(f"no results: {why}", file=sys.stderr)
        emit_json([h.to_dict() for h in hits])
        return 0
    if not hits:
        print("no results" if not why else f"no results: {why}")
        return 0
    from encoderkit.cli._results import print_hits

    print_hits(hits, args.query, mode, names, grouped=not args.chunks)
    return 0


@_database_errors
def cmd_dedup(args) -> int:
    from encoderkit.tasks.dedup import find_duplicates

    col = _open(args)
    try:
        groups = find_duplicates(col, args.threshold, neighbors=args.neighbors, progress=None if not args.json else False)
        n = col.count()
    finally:
        col.close()
    if args.json:
        emit_json({"documents": n, "threshold": args.threshold, "groups": groups})
        return 0
    print(f"{len(groups)} groups of near-duplicates (cosine >= {args.threshold}) among {n} documents")
    for g in groups:
        print(f"  [{g['size']}] min cosine {g['min_cosine']:.3f}: {', '.join(g['ids'][:8])}"
              + (" ..." if g["size"] > 8 else ""))
    return 0


def human_bytes(n: int) -> str:
    """A size as people read it: 13.2 MiB, 840 KiB, 512 bytes."""
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size):,} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
