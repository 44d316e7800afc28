"""encoderkit's compute modes vs the peers (sentence-transformers torch, ONNX Runtime, OpenVINO), all-MiniLM-L6-v2,
the same texts and threads, engines interleaved in one run.

    .venv/bin/python benchmarks/encode_throughput.py [--texts queries|scifact|stdlib] [--n 0] [--rounds 3]
        [--threads 1,2] [--compute fp32,onnx,openvino] [--peers torch,onnx,openvino]
    .venv/bin/python benchmarks/encode_throughput.py --rss [--texts scifact --n 0]

For each thread count, every engine is loaded with that many threads; then `--rounds` rounds each run every
engine once over all texts, in turn (so machine noise hits all alike) and the best round counts. Prints one table:
texts/s, useful GFLOP/s (FLOPs of the real, unpadded tokens), the ratio to the fastest exact peer, and the
worst / mean cosine to sentence-transformers' fp32 vectors, with the load average before and after.
Peers are built as benchmarks/_peers.py says. --rss runs encoderkit and sentence-transformers each alone in its
own process on the same texts and prints its peak resident memory."""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("ENCODERKIT_DATA", HERE.parent.parent / "shared" / "data"))
ST = "sentence-transformers"


def load_texts(kind: str, n: int | None) -> list[str]:
    if kind == "stdlib":
        from encoderkit.datasets.stdlib import stdlib_docstrings

        texts = [d.text for d in stdlib_docstrings()]
    elif kind in ("scifact", "queries"):
        f = DATA / "scifact" / ("corpus.jsonl" if kind == "scifact" else "queries.jsonl")
        if not f.is_file():
            sys.exit(f"{f} not found: use --texts stdlib or set ENCODERKIT_DATA")
        rows = [json.loads(line) for line in f.open()]
        texts = [(r.get("title", "") + " " + r["text"]).strip() for r in rows]
    else:
        sys.exit(f"unknown --texts {kind!r}")
    return texts[:n] if n else texts


def useful_flops(encoder, texts: list[str]) -> float:
    """Multiply-add FLOPs of a BERT-style encoder over the real tokens only (no padding): per layer, per token
    2*(4*H^2 + 2*H*F) for the Q/K/V/output and feed-forward GEMMs, plus 2*2*n*H per token for QK^T and AV."""
    cfg = encoder.config
    H, F, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    lengths = np.array([len(e.ids) for e in encoder.tokenize(texts)], dtype=np.float64)
    per_token = 2 * (4 * H * H + 2 * H * F)
    return float(L * (per_token * lengths.sum() + 4 * H * (lengths ** 2).sum()))


def run_one(engine: str, texts: list[str], batch_size: int) -> dict:
    """One engine alone (for --rss): load, encode all texts once, report time and peak RSS."""
    t0 = time.perf_counter()
    if engine == "encoderkit":
        import encoderkit

        model = encoderkit.load("all-MiniLM-L6-v2", compute=os.environ.get("ENCODERKIT_COMPUTE", "fp32"))
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        vecs = model.encode(texts, batch_size=batch_size, progress=False)
    else:
        from sentence_transformers import SentenceTransformer

        from encoderkit.checkpoints.hub import packaged_folder

        model = SentenceTransformer(str(packaged_folder("sentence-transformers/all-MiniLM-L6-v2")), device="cpu")
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        vecs = model.encode(texts, batch_size=batch_size, show_progress_bar=False)
    secs = time.perf_counter() - t0
    return {"engine": engine, "texts": len(texts), "load_s": round(load_s, 2), "encode_s": round(secs, 2),
            "texts_per_s": round(len(texts) / secs, 2), "peak_rss_mb": round(resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "dim": int(vecs.shape[1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", default="queries", choices=["stdlib", "scifact", "queries"],
                    help="queries: SciFact queries (short); scifact: SciFact abstracts (long, cut at 256 tokens)")
    ap.add_argument("--n", type=int, default=0, help="how many texts (0 = all)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts, one table each")
    ap.add_argument("--compute", default="fp32,onnx,openvino",
                    help="encoderkit compute modes: fp32,bf16x3,onnx,openvino,bf16,int8")
    ap.add_argument("--peers", default="torch,onnx,openvino",
                    help="sentence-transformers pipeline on: torch,onnx,openvino (see benchmarks/_peers.py)")
    ap.add_argument("--rss", action="store_true", help="each engine in its own process: peak RSS and texts/s")
    ap.add_argument("--engine", choices=["encoderkit", ST], help=argparse.SUPPRESS)  # the --rss child
    args = ap.parse_args()
    texts = load_texts(args.texts, args.n or None)
    if args.engine or args.rss:
        torch.set_num_threads(int(args.threads.split(",")[0]))
    if args.engine:
        print(json.dumps(run_one(args.engine, texts, args.batch_size)))
        return
    if args.rss:
        print(f"texts: {args.texts} x {len(texts)}, batch {args.batch_size}, each engine alone in a fresh process")
        for engine in (ST, "encoderkit"):
            cmd = [sys.executable, __file__, "--engine", engine, "--texts", args.texts, "--n", str(args.n),
                   "--batch-size", str(args.batch_size), "--threads", args.threads.split(",")[0]]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            print(f"  {engine:<22} peak RSS {r['peak_rss_mb']:8.1f} MB   {r['texts_per_s']:8.1f} texts/s "
                  f"(load {r['load_s']} s, encode {r['encode_s']} s)")
        return
    for threads in [int(t) for t in args.threads.split(",")]:
        bench(texts, args, threads)


def bench(texts: list[str], args, threads: int) -> None:
    """One interleaved run of every engine at `threads` threads; prints its table."""
    import encoderkit
    from _peers import st_model

    from encoderkit.checkpoints.hub import packaged_folder

    torch.set_num_threads(threads)
    folder = str(packaged_folder("sentence-transformers/all-MiniLM-L6-v2"))
    engines: dict[str, tuple[str, object]] = {}  # label -> (kind, model)
    for p in [p.strip() for p in args.peers.split(",") if p.strip()]:
        try:
            m, label = st_model(folder, p, threads)
            engines[label] = ("peer", m)
        except Exception as e:  # noqa: BLE001 - a peer that cannot run here is named, not fatal
            print(f"  (peer {p} skipped: {type(e).__name__}: {str(e).splitlines()[0][:120]})")
    for m in [m.strip() for m in args.compute.split(",") if m.strip()]:
        try:
            enc = encoderkit.load(folder, compute=m)
            engines[f"encoderkit compute={m}"] = ("ours", enc)
        except Exception as e:  # noqa: BLE001
            print(f"  (encoderkit compute={m} skipped: {type(e).__name__}: {str(e).splitlines()[0][:120]})")

    def run(kind: str, model) -> np.ndarray:
        if kind == "peer":
            return model.encode(texts, batch_size=args.batch_size, show_progress_bar=False)
        return model.encode(texts, batch_size=args.batch_size, progress=False)

    for kind, model in engines.values():  # warm-up: first-shape compilation, caches
        run(kind, model) if len(texts) <= 64 else (model.encode(texts[:64], batch_size=args.batch_size))
    load_before = os.getloadavg()
    best = {k: float("inf") for k in engines}
    vecs: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for label, (kind, model) in engines.items():
            t0 = time.perf_counter()
            vecs[label] = run(kind, model)
            best[label] = min(best[label], time.perf_counter() - t0)
    load_after = os.getloadavg()
    ours = next((m for k, m in engines.values() if k == "ours"), None)
    flops = useful_flops(ours, texts) if ours is not None else float("nan")
    rate = {k: len(texts) / v for k, v in best.items()}
    ref_label = next((k for k in engines if k.startswith("sentence-transformers torch")), next(iter(engines)))
    ref = vecs[ref_label] / np.linalg.norm(vecs[ref_label], axis=1, keepdims=True)
    cos = {}
    for k, v in vecs.items():
        c = ((v / np.linalg.norm(v, axis=1, keepdims=True)) * ref).sum(1)
        cos[k] = (float(c.min()), float(c.mean()))
    exact_peers = [k for k, (kind, _) in engines.items() if kind == "peer" and cos[k][0] >= 0.99999]
    best_peer = max(exact_peers, key=lambda k: rate[k]) if exact_peers else None
    lengths = [len(e.ids) for e in ours.tokenize(texts)] if ours is not None else [0]
    print(f"\n{args.texts} x {len(texts)} (mean {np.mean(lengths):.0f} tokens, max {max(lengths)}), batch "
          f"{args.batch_size}, {threads} thread{'s' * (threads > 1)}, best of {args.rounds} interleaved rounds; "
          f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    print(f"| engine | texts/s | useful GFLOP/s | vs best exact peer ({best_peer}) | cosine to ST fp32, min / mean |")
    print("|---|---|---|---|---|")
    for k in sorted(engines, key=lambda k: rate[k]):
        ratio = f"{rate[k] / rate[best_peer]:.2f}x" if best_peer else "-"
        print(f"| {k} | {rate[k]:.1f} | {flops / best[k] / 1e9:.1f} | {ratio} | {cos[k][0]:.7f} / {cos[k][1]:.7f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
