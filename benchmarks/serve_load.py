"""Load benchmark for `encoderkit serve` (not a test): N concurrent clients on loopback send short texts to
/v1/embeddings; throughput and p50/p99 latency with dynamic batching vs the same model served one request
at a time (--no-batching), measured in the same run, plus the p50 latency of a single short request alone.

    .venv/bin/python benchmarks/serve_load.py [--clients 32] [--seconds 15] [--model all-MiniLM-L6-v2]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from importlib.util import find_spec

import httpx
import numpy as np

from encoderkit.serve.testing import free_port

WORDS = "the cat sat on a mat while arctic terns fly from pole to pole and markets rise and fall".split()


def short_text(i: int) -> str:
    """A short text (6-12 words), different for each request."""
    rng = np.random.default_rng(i)
    return f"{i} " + " ".join(rng.choice(WORDS, size=int(rng.integers(6, 13))))


class Server:
    """`encoderkit serve` in a subprocess on a free loopback port."""

    def __init__(self, model: str, extra: list[str], threads: int | None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "encoderkit.cli", "serve", "--model", model, "--port", str(self.port),
               "--log-level", "warning", *extra]
        if threads:
            cmd += ["--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> "Server":
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not start within 180 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def metric(self, name: str) -> float:
        for line in httpx.get(self.url + "/metrics").text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams. It spends a small fraction of httpx's CPU per
    request, so on a small machine the load generator takes less of the cores the server is measured on
    (what wrk or hey do in C)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        """Send one request, read the whole response; returns its status code."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        length = None
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"response without Content-Length: {status_line!r}")
        await self.reader.readexactly(length)
        return int(status_line.split()[1])

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def load(url: str, model: str, clients: int, seconds: float, warmup: float = 2.0, http: str = "raw") -> dict:
    """`clients` concurrent closed-loop clients for `seconds`; latency of the requests after warm-up. `http`:
    "raw" (RawConnection, one keep-alive connection per client) or "httpx" (httpx.AsyncClient)."""
    lat: list[float] = []
    errors = 0
    # request bodies made before the clock starts (the load generator's own CPU stays off the measurement):
    # enough distinct texts for 400 req/s, above any rate measured here
    bodies = [json.dumps({"model": model, "input": short_text(i), "encoding_format": "base64"})
              for i in range(int(400 * (seconds + warmup)))]
    counter = iter(range(10**9))
    t_start = time.perf_counter()
    t_measure, t_end = t_start + warmup, t_start + warmup + seconds

    async def client(post) -> None:
        nonlocal errors
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                return
            status = await post(bodies[next(counter) % len(bodies)])
            t1 = time.perf_counter()
            if status != 200:
                errors += 1
            elif t0 >= t_measure:
                lat.append(t1 - t0)

    if http == "raw":
        host, port = url.removeprefix("http://").rsplit(":", 1)
        conns = [RawConnection(host, int(port)) for _ in range(clients)]
        try:
            await asyncio.gather(*[client(lambda body, conn=conn: conn.post("/v1/embeddings", body.encode()))
                                   for conn in conns])
        finally:
            for conn in conns:
                await conn.close()
    else:
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=clients)) as c:
            async def post(body: str) -> int:
                return (await c.post("/v1/embeddings", content=body,
                                     headers={"content-type": "application/json"})).status_code
            await asyncio.gather(*[client(post) for _ in range(clients)])
    arr = np.array(lat) * 1000
    return {"clients": clients, "requests": len(lat), "errors": errors, "rps": len(lat) / seconds,
            "p50_ms": float(np.percentile(arr, 50)) if len(arr) else None,
            "p99_ms": float(np.percentile(arr, 99)) if len(arr) else None}


def single_latency(url: str, model: str, n: int = 100) -> dict:
    """p50 / p99 of one short request at a time (nothing else in flight)."""
    with httpx.Client(base_url=url, timeout=60) as c:
        for i in range(10):
            c.post("/v1/embeddings", json={"model": model, "input": short_text(i)})
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            r = c.post("/v1/embeddings", json={"model": model, "input": short_text(10**6 + i)})
            lat.append(time.perf_counter() - t0)
            r.raise_for_status()
    arr = np.array(lat) * 1000
    return {"requests": n, "p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99))}


def forward_ceiling(model: str, batch: int, threads: int | None, reps: int = 5) -> dict:
    """The model alone, no HTTP: ms per short text when encoded one at a time vs `batch` at a time. Their
    ratio bounds what any batching server can gain on this machine right now."""
    import torch

    import encoderkit

    if threads:
        torch.set_num_threads(threads)
    enc = encoderkit.load(model)
    texts = [short_text(i) for i in range(batch)]
    enc.encode(texts)
    t0 = time.perf_counter()
    for _ in range(reps):
        for t in texts[:8]:
            enc.encode([t])
    one = (time.perf_counter() - t0) / (reps * 8)
    t0 = time.perf_counter()
    for _ in range(reps):
        enc.encode(texts, batch_size=batch)
    many = (time.perf_counter() - t0) / (reps * batch)
    return {"ms_per_text_alone": one * 1000, f"ms_per_text_in_batch_{batch}": many * 1000, "ceiling_ratio": one / many}


def _run(coro):
    """asyncio.run on uvloop when it is installed (a lighter load generator), else the default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=15.0, help="measured seconds per configuration")
    ap.add_argument("--threads", type=int, default=None, help="torch threads in the server (default: its choice)")
    ap.add_argument("--http", choices=("raw", "httpx"), default="raw",
                    help="load generator's HTTP client: raw asyncio streams (light) or httpx")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    # what uvicorn's "auto" settings pick in the server subprocess (same interpreter)
    stack = ("httptools" if find_spec("httptools") else "h11") + " + " + ("uvloop" if find_spec("uvloop") else "asyncio")
    out: dict = {"model": args.model, "http_client": args.http, "server_stack": stack,
                 "cpus": len(os.sched_getaffinity(0)), "load_avg_1m": os.getloadavg()[0]}
    out["forward_only"] = forward_ceiling(args.model, args.clients, args.threads)
    with Server(args.model, [], args.threads) as srv:
        out["single"] = single_latency(srv.url, args.model)
        n0, s0 = srv.metric("encoderkit_batch_requests_count"), srv.metric("encoderkit_batch_requests_sum")
        out["batched"] = _run(load(srv.url, args.model, args.clients, args.seconds, http=args.http))
        n = srv.metric("encoderkit_batch_requests_count") - n0
        out["batched"]["mean_requests_per_batch"] = (srv.metric("encoderkit_batch_requests_sum") - s0) / n if n else None
    with Server(args.model, ["--no-batching"], args.threads) as srv:
        out["one_at_a_time"] = _run(load(srv.url, args.model, args.clients, args.seconds, http=args.http))
    b, o = out["batched"], out["one_at_a_time"]
    out["throughput_ratio"] = b["rps"] / o["rps"] if o["rps"] else None
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    print(f"model {args.model}, {out['cpus']} CPUs, load average {out['load_avg_1m']:.1f}, {args.clients} clients, "
          f"{args.seconds:.0f} s each, {args.http} HTTP client, uvicorn on {out['server_stack']}")
    print(f"{'':<16}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, r in (("dynamic batch", b), ("one at a time", o)):
        print(f"{name:<16}{r['rps']:>9.1f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['errors']:>8}")
    print(f"throughput ratio (batched / one at a time): {out['throughput_ratio']:.2f}x (goal >= 3x); "
          f"mean requests per batch {b['mean_requests_per_batch']:.1f}")
    f = out["forward_only"]
    print(f"model alone (no HTTP): {f['ms_per_text_alone']:.1f} ms per text one at a time, "
          f"{f[f'ms_per_text_in_batch_{args.clients}']:.1f} ms in batches of {args.clients}: "
          f"a {f['ceiling_ratio']:.2f}x ceiling for batching on this machine now")
    print(f"single short request alone: p50 {out['single']['p50_ms']:.1f} ms, p99 {out['single']['p99_ms']:.1f} ms "
          "(goal p50 < 20 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
