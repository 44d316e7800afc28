"""`encoderkit serve` (HTTP server: OpenAI, Ollama and TEI embedding APIs, rerank, collections) and
`encoderkit keys add|list|revoke` (the server's API-key file)."""
from __future__ import annotations

import sys

from encoderkit.cli._common import add_json_flag, emit_json


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve embeddings, rerank and search over HTTP (OpenAI, Ollama, TEI APIs)")
    p.add_argument("--model", action="append", dest="models", metavar="NAME",
                   help="embedding model to load at start for the OpenAI/Ollama/TEI APIs (repeat for several; default "
                        "all-MiniLM-L6-v2). Collections need no flag: each one's own model loads on first use")
    p.add_argument("--max-models", type=int, default=2, metavar="N",
                   help="models kept loaded for collections besides the --model ones; the least recently used "
                        "is unloaded beyond N (default 2)")
    p.add_argument("--rerank-model", action="append", dest="rerank_models", default=[], metavar="NAME",
                   help="cross-encoder for /rerank and search rerank (repeatable)")
    p.add_argument("--store", default=None, metavar="DIR|URL",
                   help="collections served under /collections: a folder (one sub-folder each; default "
                        "$ENCODERKIT_HOME/collections, as every other command) or a PostgreSQL database with "
                        "pgvector, postgresql://user@host:port/db (one table each)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.add_argument("--api-keys", default=None, metavar="FILE", help="API-key file (make keys: encoderkit keys add)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback address without API keys")
    p.add_argument("--max-batch-tokens", type=int, default=8192, help="padded tokens per forward batch")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="how long a batch waits for more requests")
    p.add_argument("--max-queue", type=int, default=2048,
                   help="inputs waiting per model before 429 (a request with more inputs gets 413)")
    p.add_argument("--max-inputs", type=int, default=2048, help="inputs per request")
    p.add_argument("--max-body-mb", type=float, default=16.0, help="largest request body, MiB")
    p.add_argument("--auto-truncate", action="store_true",
                   help="OpenAI/TEI: cut over-long inputs instead of refusing them (Ollama truncates by default)")
    p.add_argument("--no-batching", action="store_true", help="one request per forward pass (for comparison)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all allowed CPUs)")
    p.add_argument("--lanes", type=int, default=None,
                   help="batches each model runs side by side, the threads shared among them (default: one per "
                        "thread for models torch runs on the CPU, 1 for exported engines)")
    p.add_argument("--lane-kind", choices=["auto", "thread", "process"], default="auto",
                   help="lanes as threads of the server or as processes holding a copy of the model each (default "
                        "auto: processes when the copies fit in half the RAM, else one thread lane)")
    p.add_argument("--compute", choices=["auto", "fp32", "bf16x3", "onnx", "openvino", "bf16", "int8"], default="auto",
                   help="how models compute: auto (default: the fastest exact path: bf16x3 on AMX-BF16 CPUs, else "
                        "OpenVINO, then ONNX Runtime, else torch fp32), fp32 (torch), bf16x3, onnx, openvino (exact), "
                        "bf16, int8 "
                        "(approximate); GET /info names the engine")
    p.add_argument("--graceful-timeout", type=float, default=30.0, help="seconds in-flight requests get on shutdown")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="server log detail (default info; debug also logs each request)")
    p.set_defaults(func=run_serve)

    k = sub.add_parser("keys", help="manage the server's API keys (stored hashed)")
    ks = k.add_subparsers(dest="keys_command", metavar="ACTION")
    a = ks.add_parser("add", help="make a key (printed once; only its hash is stored)")
    a.add_argument("--file", required=True, help="the API-key file (created if missing)")
    a.add_argument("--role", default="read", choices=["read", "write", "admin"],
                   help="read: embed/rerank/search; write: + documents; admin: + create/drop collections")
    a.add_argument("--collections", default="*", help="comma-separated collections this key may use (* = all)")
    a.add_argument("--name", default="", help="a label for the key")
    add_json_flag(a)
    a.set_defaults(func=run_keys_add)
    ls = ks.add_parser("list", help="list keys (ids, roles, grants; never the keys)")
    ls.add_argument("--file", required=True, help="the API-key file")
    add_json_flag(ls)
    ls.set_defaults(func=run_keys_list)
    rv = ks.add_parser("revoke", help="remove a key by id (a running server notices within a second)")
    rv.add_argument("--file", required=True, help="the API-key file")
    rv.add_argument("id", help="the key's id (`encoderkit keys list` shows them)")
    add_json_flag(rv)
    rv.set_defaults(func=run_keys_revoke)


def run_serve(args) -> int:
    import logging

    from encoderkit.serve.app import check_bind, run
    from encoderkit.serve.state import ServeConfig

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    for flag in ("max_batch_tokens", "max_queue", "max_inputs", "port", "max_models", "lanes"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1")
    store = args.store
    if store is None:  # the same place `encoderkit index` puts collections
        from encoderkit.store import collection_path

        store = str(collection_path("x").parent)
    cfg = ServeConfig(models=args.models or ["all-MiniLM-L6-v2"], rerank_models=args.rerank_models,
                      store=store, max_models=args.max_models, host=args.host, port=args.port, api_keys=args.api_keys,
                      insecure=args.insecure, max_batch_tokens=args.max_batch_tokens, max_wait_ms=args.max_wait_ms,
                      max_queue=args.max_queue, batching=not args.no_batching, max_inputs=args.max_inputs,
                      max_body_bytes=int(args.max_body_mb * 1024 * 1024), auto_truncate=args.auto_truncate,
                      graceful_timeout=args.graceful_timeout, compute=args.compute, lanes=args.lanes,
                      lane_kind=args.lane_kind)
    check_bind(cfg)  # before loading models: fail fast
    logging.getLogger("encoderkit").setLevel(getattr(logging, args.log_level.upper()))
    run(cfg, log_level=args.log_level)
    return 0


def run_keys_add(args) -> int:
    from encoderkit.serve.auth import KeyStore

    grants = [c.strip() for c in args.collections.split(",")]
    if not any(grants):  # "" or "," or " " used to grant everything: '*' must be written out
        raise ValueError(f"--collections {args.collections!r} names no collection; give comma-separated names, "
                         "or '*' for all")
    if not all(grants):
        raise ValueError(f"--collections {args.collections!r} has an empty name between commas; remove it")
    key, rec = KeyStore(args.file).add(role=args.role, collections=grants, name=args.name)
    if args.json:
        emit_json({"key": key, "id": rec.id, "role": rec.role, "collections": rec.collections, "name": rec.name})
    else:
        print(key)
        print(f"id {rec.id}, role {rec.role}, collections {','.join(rec.collections)} "
              "(the key is shown only now; the file keeps its hash)", file=sys.stderr)
    return 0


def run_keys_list(args) -> int:
    from encoderkit.serve.auth import KeyStore

    recs = KeyStore(args.file).records()
    rows = [{"id": r.id, "role": r.role, "collections": r.collections, "name": r.name, "created": r.created}
            for r in recs]
    if args.json:
        emit_json(rows)
    else:
        for r in rows:
            print(f"{r['id']}  {r['role']:<5}  {','.join(r['collections'])}  {r['name']}  {r['created']}")
    return 0


def run_keys_revoke(args) -> int:
    from encoderkit.serve.auth import KeyStore

    if not KeyStore(args.file).revoke(args.id):
        raise KeyError(f"no key with id {args.id!r} in {args.file}; `encoderkit keys list --file {args.file}` shows them")
    if args.json:
        emit_json({"revoked": args.id})
    else:
        print(f"revoked {args.id}", file=sys.stderr)
    return 0
