"""Load benchmark for `encoderkit serve` (not a test): N concurrent clients on loopback send short texts to
/v1/embeddings; throughput and p50/p99 latency with dynamic batching for each --compute engine, vs the same model
served one request at a time (--no-batching) and vs infinity-emb serving the same model folder, all measured in the
same run, plus the p50 latency of a single short request alone.

    .venv/bin/python benchmarks/serve_load.py [--clients 32] [--seconds 15] [--model all-MiniLM-L6-v2]
        [--computes fp32,auto] [--peers infinity-torch,infinity-optimum]

infinity-emb pins packages that conflict with encoderkit's (numpy<2, older uvicorn / huggingface_hub), so it lives
in its own venv, .venv-bench-infinity (`make bench-peers`), and runs there as a subprocess server (`infinity_emb v2`,
offline, the same folder encoderkit loads); a peer whose venv or engine is missing is reported as skipped."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

import httpx
import numpy as np

from encoderkit.serve.testing import free_port

WORDS = "the cat sat on a mat while arctic terns fly from pole to pole and markets rise and fall".split()


def short_text(i: int) -> str:
    """A short text (6-12 words), different for each request."""
    rng = np.random.default_rng(i)
    return f"{i} " + " ".join(rng.choice(WORDS, size=int(rng.integers(6, 13))))


INFINITY_VENV = Path(__file__).resolve().parent.parent / ".venv-bench-infinity"


class Server:
    """`encoderkit serve` in a subprocess on a free loopback port."""

    health = "/health"
    start_seconds = 180

    def __init__(self, model: str, extra: list[str], threads: int | None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "encoderkit.cli", "serve", "--model", model, "--port", str(self.port),
               "--log-level", "warning", *extra]
        if threads:
            cmd += ["--threads", str(threads)]
        self.log = tempfile.TemporaryFile("w+")  # a pipe nobody reads could fill and stall the server
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log, text=True, env=self.env(threads))

    def env(self, threads: int | None) -> dict:
        return dict(os.environ)

    def __enter__(self) -> "Server":
        deadline = time.monotonic() + self.start_seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"server exited: {self.log.read()[-2000:]}")
            try:
                if httpx.get(self.url + self.health, timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"server did not start within {self.start_seconds} s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def metric(self, name: str) -> float:
        for line in httpx.get(self.url + "/metrics").text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


class InfinityServer(Server):
    """infinity-emb (`infinity_emb v2`) serving a model folder offline from .venv-bench-infinity, OpenAI routes
    under /v1; engine "torch" (its default, sentence-transformers) or "optimum" (ONNX Runtime)."""

    health = "/health"
    start_seconds = 600

    def __init__(self, folder: str, name: str, engine: str, threads: int | None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # optimum: infinity-emb 0.0.78 lists a local folder's files with absolute paths and hands one to optimum as
        # the file name, which optimum refuses; run it inside the folder as "." so the paths are relative, with a
        # private hub cache (it keeps its optimized copy there, under the model id)
        cwd, model_id = (folder, ".") if engine == "optimum" else (None, folder)
        self.cache = tempfile.TemporaryDirectory(prefix="serve_load_hf_")
        cmd = [str(INFINITY_VENV / "bin" / "infinity_emb"), "v2", "--model-id", model_id, "--served-model-name",
               name, "--engine", engine, "--device", "cpu", "--port", str(self.port), "--url-prefix", "/v1",
               "--log-level", "warning"]
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, text=True, env=self.env(threads),
                                     cwd=cwd)

    def env(self, threads: int | None) -> dict:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
               "INFINITY_ANONYMOUS_USAGE_STATS": "0", "HF_HOME": self.cache.name}
        if threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        return env


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


async def load(url: str, model: str, clients: int, seconds: float, warmup: float = 2.0, http: str = "raw",
               encoding: str = "base64") -> dict:
    """`clients` concurrent closed-loop clients for `seconds`; latency of the requests after warm-up. `http`:
    "raw" (RawConnection, one keep-alive connection per client) or "httpx" (httpx.AsyncClient)."""
    lat: list[float] = []
    errors = 0
    # request bodies made before the clock starts (the load generator's own CPU stays off the measurement):
    # enough distinct texts for 400 req/s, above any rate measured here
    bodies = [json.dumps({"model": model, "input": short_text(i), "encoding_format": encoding})
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
    ap.add_argument("--computes", default="fp32,auto",
                    help="encoderkit serve --compute values measured with dynamic batching (comma-separated)")
    ap.add_argument("--peers", default="infinity-torch,infinity-optimum",
                    help="peer servers on the same model folder: infinity-torch, infinity-optimum ('' for none)")
    ap.add_argument("--single-requests", type=int, default=100, help="requests for the single-request latency")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    computes = [c for c in args.computes.split(",") if c]
    peers = [p for p in args.peers.split(",") if p]
    for p in peers:
        if p not in ("infinity-torch", "infinity-optimum"):
            ap.error(f"unknown peer {p!r}; choose infinity-torch or infinity-optimum")
    # what uvicorn's "auto" settings pick in the server subprocess (same interpreter)
    stack = ("httptools" if find_spec("httptools") else "h11") + " + " + ("uvloop" if find_spec("uvloop") else "asyncio")
    out: dict = {"model": args.model, "http_client": args.http, "server_stack": stack,
                 "cpus": len(os.sched_getaffinity(0)), "load_avg_1m": os.getloadavg()[0]}
    out["forward_only"] = forward_ceiling(args.model, args.clients, args.threads)
    out["engines"] = {}
    for compute in computes:
        with Server(args.model, ["--compute", compute], args.threads) as srv:
            n0, s0 = srv.metric("encoderkit_batch_requests_count"), srv.metric("encoderkit_batch_requests_sum")
            r = _run(load(srv.url, args.model, args.clients, args.seconds, http=args.http))
            n = srv.metric("encoderkit_batch_requests_count") - n0
            r["mean_requests_per_batch"] = (srv.metric("encoderkit_batch_requests_sum") - s0) / n if n else None
            r["single"] = single_latency(srv.url, args.model, args.single_requests)
            info = httpx.get(srv.url + "/info").json()
            r["engine"] = f"{info.get('compute_engine')}; {info.get('compute_lanes')}"
            out["engines"][f"encoderkit {compute}"] = r
            if compute == computes[0]:  # the batching comparison below is made on this engine
                out["batched"], out["single"] = r, r["single"]
    out["peers"] = {p: measure_peer(p, args) for p in peers}
    with Server(args.model, ["--no-batching", "--compute", computes[0]], args.threads) as srv:
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
    print_engines(out, args.clients)
    return 0


def measure_peer(peer: str, args) -> dict:
    """One peer server on the same model folder: batched load and single-request latency, or why it was skipped."""
    from encoderkit.checkpoints.hub import resolve

    if not (INFINITY_VENV / "bin" / "infinity_emb").is_file():
        return {"skipped": f"{INFINITY_VENV} has no infinity_emb: make bench-peers"}
    engine, folder, view = peer.split("-", 1)[1], str(resolve(args.model)), None
    try:
        if engine == "optimum":  # its ONNX Runtime engine needs an exported model.onnx in the folder
            folder = view = onnx_folder(folder)
        with InfinityServer(folder, args.model, engine, args.threads) as srv:
            r = _run(load(srv.url, args.model, args.clients, args.seconds, http=args.http, encoding="float"))
            r["single"] = single_latency(srv.url, args.model, args.single_requests)
            if r["errors"] and not r["requests"]:
                return {"skipped": f"every request failed ({r['errors']} errors)"}
            return r
    except RuntimeError as exc:  # the engine is not installed or does not start on this model
        errors = [line.strip() for line in str(exc).splitlines() if "Error" in line]
        return {"skipped": (errors[-1] if errors else " ".join(str(exc).split()))[-300:]}
    finally:
        if view is not None:  # the temporary onnx_folder view (symlinks and the exported file)
            import shutil

            shutil.rmtree(view, ignore_errors=True)


def onnx_folder(folder: str) -> str:
    """A temporary view of a model folder plus model.onnx (the transformers model exported by torch.onnx, as
    benchmarks/_peers.py does for sentence-transformers' backend="onnx"), for infinity-emb's optimum engine."""
    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _peers import hf_onnx_bytes

    view = Path(tempfile.mkdtemp(prefix="serve_load_onnx_"))
    for item in Path(folder).iterdir():
        (view / item.name).symlink_to(item)
    # at the top of the folder: infinity-emb hands the path it found to optimum as the file name, and optimum
    # matches a file name without its subfolder
    (view / "model.onnx").write_bytes(hf_onnx_bytes(transformers.AutoModel.from_pretrained(folder).eval()))
    return str(view)


def print_engines(out: dict, clients: int) -> None:
    """Each engine's requests/s at `clients` clients and single-request p50, with ratios to the best peer."""
    rows = {**out["engines"], **{k: v for k, v in out["peers"].items() if "skipped" not in v}}
    best = max((v["rps"] for k, v in out["peers"].items() if "skipped" not in v), default=None)
    best_p50 = min((v["single"]["p50_ms"] for k, v in out["peers"].items() if "skipped" not in v), default=None)
    print(f"\n{'engine (' + str(clients) + ' clients)':<26}{'req/s':>9}{'vs peer':>9}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'single p50':>12}{'errors':>8}  runs on")
    for name, r in rows.items():
        ratio = f"{r['rps'] / best:.2f}x" if best else "-"
        print(f"{name:<26}{r['rps']:>9.1f}{ratio:>9}{r['p50_ms'] or 0:>9.1f}{r['p99_ms'] or 0:>9.1f}"
              f"{r['single']['p50_ms']:>12.1f}{r['errors']:>8}  {r.get('engine') or name}")
    for name, v in out["peers"].items():
        if "skipped" in v:
            print(f"{name}: skipped ({v['skipped']})")
    if best:
        print(f"goal: >= 1.5x the best peer's req/s ({best:.1f}) and a lower single-request p50 ({best_p50:.1f} ms)")


if __name__ == "__main__":
    sys.exit(main())
