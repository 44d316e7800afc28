"""Ray Data batch encoding throughput with 1 and 2 actors (each actor 1 thread, model loaded once per actor),
next to single-process `encode` with 1 and 2 threads on the same texts, all in one run.

    .venv/bin/python benchmarks/ray_encode.py [--texts queries|scifact] [--n 0]

Each Ray run happens in a fresh process with a fresh local Ray (`ray.init(num_cpus=actors + 1)`); its time covers
the whole job: actor start-up and model load, reading the JSONL, encoding and writing Parquet. The vectors of every
run are checked equal to single-process encode."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from encode_throughput import load_texts  # noqa: E402

CHILD = """
import json, sys, time
from encoderkit.distributed.ray_encode import ray_encode
t0 = time.perf_counter()
r = ray_encode("all-MiniLM-L6-v2", [sys.argv[1]], sys.argv[2], actors=int(sys.argv[3]), threads_per_actor=1)
r["wall_seconds"] = round(time.perf_counter() - t0, 2)
print("RESULT " + json.dumps(r))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", default="queries", choices=["queries", "scifact"])
    ap.add_argument("--n", type=int, default=0, help="how many texts (0 = all)")
    args = ap.parse_args()
    texts = load_texts(args.texts, args.n or None)
    import torch

    import encoderkit
    from encoderkit.distributed.ray_encode import read_parquet_vectors

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "texts.jsonl"
        with open(src, "w", encoding="utf-8") as f:
            for i, t in enumerate(texts):
                f.write(json.dumps({"id": f"t{i}", "text": t}) + "\n")
        enc = encoderkit.load("all-MiniLM-L6-v2")
        local = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            enc.encode(texts[:32])
            t0 = time.perf_counter()
            ref = enc.encode(texts, progress=False)
            local[threads] = time.perf_counter() - t0
        print(f"{len(texts)} texts ({args.texts}, mean {np.mean([len(t) for t in texts]):.0f} chars)")
        for threads, s in local.items():
            print(f"  single process, {threads} thread{'s' * (threads > 1)}: {len(texts) / s:8.1f} texts/s  ({s:.1f} s)")
        rates = {}
        for actors in (1, 2):
            out = Path(tmp) / f"out{actors}.parquet"
            p = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out), str(actors)], capture_output=True,
                               text=True)
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
            if p.returncode or not line:
                sys.exit(f"ray run with {actors} actors failed:\n{p.stderr[-3000:]}")
            r = json.loads(line[-1][7:])
            ids, vecs = read_parquet_vectors(str(out))
            order = np.argsort([int(i[1:]) for i in ids])
            err = float(np.abs(vecs[order] - ref).max())
            rates[actors] = r["count"] / r["seconds"]
            print(f"  Ray Data, {actors} actor{'s' * (actors > 1)} x 1 thread: {rates[actors]:8.1f} texts/s in the "
                  f"pipeline ({r['seconds']} s; {r['wall_seconds']} s with ray.init; max |diff| to local {err:.1e})")
        print(f"  pipeline throughput, 2 actors / 1 actor: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
