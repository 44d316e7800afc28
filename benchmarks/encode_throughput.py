"""encoderkit vs sentence-transformers: same texts, same threads, same model (all-MiniLM-L6-v2), one run.

    .venv/bin/python benchmarks/encode_throughput.py [--texts scifact|queries|stdlib] [--n 2000] [--rounds 2]
        [--compute fp32,int8,bf16] [--threads N]
    .venv/bin/python benchmarks/encode_throughput.py --rss [--texts scifact --n 0]

Prints texts/s for each engine, the ratio, the worst and mean cosine of each encoderkit compute mode to
sentence-transformers' fp32 vectors, and the useful GFLOP/s each engine achieved (FLOPs of the real, unpadded
tokens) next to the machine's measured fp32 GEMM peak at the same thread count, which is the ceiling: no fp32
engine can exceed peak / (sentence-transformers' GFLOP/s) times its speed.
Rounds alternate the engines so that machine noise hits both alike; the best round of each counts.
--rss runs each engine alone in its own process on the same texts and prints its peak resident memory."""
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


def gemm_peak(seconds: float = 2.0) -> float:
    """Best fp32 GFLOP/s of a 1024^3 matrix product at the current thread count (MKL via torch)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(5):
            a @ b
        best = min(best, (time.perf_counter() - t0) / 5)
    return 2 * 1024 ** 3 / best / 1e9


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

        model = encoderkit.load("all-MiniLM-L6-v2")
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
    ap.add_argument("--texts", default="stdlib", choices=["stdlib", "scifact", "queries"])
    ap.add_argument("--n", type=int, default=2000, help="how many texts (0 = all)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's default)")
    ap.add_argument("--compute", default="fp32", help="comma-separated encoderkit compute modes: fp32,int8,bf16")
    ap.add_argument("--rss", action="store_true", help="each engine in its own process: peak RSS and texts/s")
    ap.add_argument("--engine", choices=["encoderkit", ST], help=argparse.SUPPRESS)  # the --rss child
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    texts = load_texts(args.texts, args.n or None)
    if args.engine:
        print(json.dumps(run_one(args.engine, texts, args.batch_size)))
        return
    if args.rss:
        print(f"texts: {args.texts} x {len(texts)}, batch {args.batch_size}, each engine alone in a fresh process")
        for engine in (ST, "encoderkit"):
            cmd = [sys.executable, __file__, "--engine", engine, "--texts", args.texts, "--n", str(args.n),
                   "--batch-size", str(args.batch_size)] + (["--threads", str(args.threads)] if args.threads else [])
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            print(f"  {engine:<22} peak RSS {r['peak_rss_mb']:8.1f} MB   {r['texts_per_s']:8.1f} texts/s "
                  f"(load {r['load_s']} s, encode {r['encode_s']} s)")
        return

    import encoderkit
    from sentence_transformers import SentenceTransformer

    from encoderkit.checkpoints.hub import packaged_folder

    modes = [m.strip() for m in args.compute.split(",") if m.strip()]
    ours = {m: encoderkit.load("all-MiniLM-L6-v2", compute=m) for m in modes}
    ref = SentenceTransformer(str(packaged_folder("sentence-transformers/all-MiniLM-L6-v2")), device="cpu")
    for m in ours.values():
        m.encode(texts[:64])
    ref.encode(texts[:64])  # warm-up
    names = [ST] + [f"encoderkit {m}" for m in modes]
    best = {k: float("inf") for k in names}
    vecs = {}
    for _ in range(args.rounds):
        for name in names:
            t0 = time.perf_counter()
            if name == ST:
                vecs[name] = ref.encode(texts, batch_size=args.batch_size, show_progress_bar=False)
            else:
                vecs[name] = ours[name.split()[1]].encode(texts, batch_size=args.batch_size, progress=False)
            best[name] = min(best[name], time.perf_counter() - t0)
    flops = useful_flops(next(iter(ours.values())), texts)
    peak = gemm_peak()
    rate = {k: len(texts) / v for k, v in best.items()}
    print(f"texts: {args.texts} x {len(texts)} (mean {np.mean([len(t) for t in texts]):.0f} chars), "
          f"batch {args.batch_size}, torch threads {torch.get_num_threads()}, best of {args.rounds} rounds")
    print(f"  fp32 GEMM peak (1024^3, {torch.get_num_threads()} threads): {peak:.1f} GFLOP/s; "
          f"useful work {flops / len(texts) / 1e9:.3f} GFLOP per text")
    b = vecs[ST] / np.linalg.norm(vecs[ST], axis=1, keepdims=True)
    for k in names:
        line = (f"  {k:<22} {best[k]:8.2f} s  {rate[k]:8.1f} texts/s  {flops / best[k] / 1e9:6.1f} GFLOP/s "
                f"({100 * flops / best[k] / 1e9 / peak:4.1f}% of peak)")
        if k != ST:
            a = vecs[k] / np.linalg.norm(vecs[k], axis=1, keepdims=True)
            cos = (a * b).sum(1)
            line += f"  ratio {rate[k] / rate[ST]:.2f}x  cosine to fp32 min {cos.min():.7f} mean {cos.mean():.7f}"
        print(line)
    print(f"  ceiling for any fp32 engine on this machine: {peak / (flops / best[ST] / 1e9):.2f}x sentence-transformers")


if __name__ == "__main__":
    main()
