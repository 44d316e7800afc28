"""Dynamic batching: concurrent requests share forward passes yet each caller gets its own vector; the
event loop stays free during a forward pass; overload gives 429 + Retry-After and the server keeps serving."""
from __future__ import annotations

import asyncio
import re
import threading
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from encoderkit.serve.app import create_app  # noqa: E402
from encoderkit.serve.batcher import Batcher, QueueFull  # noqa: E402
from encoderkit.serve.metrics import Metrics  # noqa: E402
from encoderkit.serve.models import EmbeddingModel, ModelRegistry  # noqa: E402
from encoderkit.serve.state import ServeConfig  # noqa: E402
from encoderkit.serve.testing import LiveServer  # noqa: E402
from test_serve_clients import shared_encoder  # noqa: E402


# ------------------------------------------------------------------ the batcher alone
def _slow_double(seen: list):
    def run(items):
        seen.append(len(items))
        time.sleep(0.02)
        return [2 * x for x in items]
    return run


def test_batcher_coalesces_and_splits_back():
    seen: list[int] = []
    b = Batcher("t", _slow_double(seen), max_batch_tokens=1000, max_wait_ms=5)

    async def main():
        return await asyncio.gather(*[b.submit([i, i + 100], cost=2) for i in range(40)])

    out = asyncio.run(main())
    b.close()
    assert out == [[2 * i, 2 * (i + 100)] for i in range(40)]
    assert max(seen) > 2 and sum(seen) == 80  # several requests per forward pass, none lost


def test_batcher_token_budget_queue_limit_and_errors():
    seen: list[int] = []
    b = Batcher("t", _slow_double(seen), max_batch_tokens=10, max_wait_ms=5, max_queue=6)

    async def main():
        ok = [b.submit([i], cost=5) for i in range(6)]
        res = await asyncio.gather(*ok, b.submit([99], cost=5), return_exceptions=True)
        return res

    res = asyncio.run(main())
    assert max(seen) <= 2  # 2 x 5 tokens fit the budget of 10
    full = [r for r in res if isinstance(r, QueueFull)]
    assert len(full) >= 1 and full[0].retry_after >= 1
    assert [r for r in res if not isinstance(r, Exception)] == [[2 * i] for i in range(6)][: 7 - len(full)]

    def boom(items):
        raise RuntimeError("model exploded")

    bad = Batcher("bad", boom)

    async def fail():
        return await asyncio.gather(bad.submit([1], 1), bad.submit([2], 1), return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(fail()))
    assert bad._threads[0].is_alive()  # the worker survives a failing batch
    bad.close()
    b.close()


def test_batcher_one_at_a_time_mode():
    seen: list[int] = []
    b = Batcher("t", _slow_double(seen), batching=False)

    async def main():
        return await asyncio.gather(*[b.submit([i], 1) for i in range(10)])

    assert asyncio.run(main()) == [[2 * i] for i in range(10)]
    b.close()
    assert seen == [1] * 10


# ------------------------------------------------------------------ through the server
@pytest.fixture(scope="module")
def enc():
    return shared_encoder()


def _serve(enc, **cfg_kw):
    cfg = ServeConfig(**cfg_kw)
    metrics = Metrics()
    reg = ModelRegistry()
    reg.add(EmbeddingModel("all-MiniLM-L6-v2", enc, cfg.limits, metrics))
    return LiveServer(create_app(cfg, registry=reg, metrics=metrics))


def _metric(text: str, name: str, **labels) -> float:
    lab = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(lab)}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.mark.slow  # ~10 s here (64 requests from 32 clients)
def test_32_concurrent_clients_share_batches_and_get_their_own_vectors(enc):
    texts = [f"request {i}: " + " ".join(["tern", "heap", "mat", "stock"][i % 4] for _ in range(1 + i % 7))
             for i in range(64)]
    want = enc.encode(texts)
    with _serve(enc, max_wait_ms=5) as srv:
        async def main():
            async with httpx.AsyncClient(base_url=srv.url, timeout=120,
                                         limits=httpx.Limits(max_connections=32)) as c:
                sem = asyncio.Semaphore(32)

                async def one(i):
                    async with sem:
                        r = await c.post("/v1/embeddings", json={"model": "all-minilm", "input": texts[i],
                                                                 "encoding_format": "float"})
                        return r.status_code, r.json()["data"][0]["embedding"]
                return await asyncio.gather(*[one(i) for i in range(len(texts))])

        res = asyncio.run(main())
        page = httpx.get(srv.url + "/metrics").text
    assert all(s == 200 for s, _ in res)
    got = np.array([v for _, v in res])
    assert np.abs(got - want).max() <= 1e-5  # every caller got its own vector
    n_batches = _metric(page, "encoderkit_batch_requests_count", model="all-MiniLM-L6-v2")
    singles = _metric(page, "encoderkit_batch_requests_bucket", model="all-MiniLM-L6-v2", le="1.0")
    assert n_batches < len(texts) and n_batches - singles >= 1  # some batches held more than one request
    assert _metric(page, "encoderkit_tokens_total", model="all-MiniLM-L6-v2") == sum(len(e.ids) for e in enc.tokenize(texts))
    assert _metric(page, "encoderkit_requests_total", method="POST", route="/v1/embeddings", status="200") == 64


@pytest.mark.slow  # ~10 s here (one 64-input request)
def test_event_loop_stays_free_during_a_forward_pass(enc):
    big = ["a long passage about migrating arctic terns and the stock market " * 4] * 64
    with _serve(enc) as srv:
        done = {}

        def heavy():
            t0 = time.perf_counter()
            done["status"] = httpx.post(srv.url + "/embed", json={"inputs": big, "truncate": True}, timeout=300).status_code
            done["seconds"] = time.perf_counter() - t0

        th = threading.Thread(target=heavy)
        th.start()
        time.sleep(0.3)
        lat = []
        while th.is_alive() and len(lat) < 20:
            t0 = time.perf_counter()
            assert httpx.get(srv.url + "/health", timeout=30).status_code == 200
            lat.append(time.perf_counter() - t0)
            time.sleep(0.05)
        th.join()
    assert done["status"] == 200
    assert lat, "the big request finished before the probe started; make it bigger"
    assert max(lat) < max(0.5, done["seconds"] / 4), (lat, done)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


@pytest.mark.slow  # ~10 s here (120 requests against a 16-input queue)
def test_overload_gives_429_and_the_server_keeps_serving(enc):
    with _serve(enc, max_queue=16, max_batch_tokens=256) as srv:
        depth_seen = []
        rss0 = _rss_mb()

        async def flood():
            async with httpx.AsyncClient(base_url=srv.url, timeout=120,
                                         limits=httpx.Limits(max_connections=200)) as c:
                async def one(i):
                    texts = [f"flood {i} {j} " * 8 for j in range(4)]
                    if i % 3 == 0:
                        return await c.post("/api/embed", json={"model": "all-minilm", "input": texts})
                    if i % 3 == 1:
                        return await c.post("/v1/embeddings", json={"model": "all-minilm", "input": texts})
                    return await c.post("/embed", json={"inputs": texts})

                async def watch():
                    for _ in range(40):
                        m = await c.get("/metrics")
                        depth_seen.append(_metric(m.text, "encoderkit_queue_depth", model="all-MiniLM-L6-v2"))
                        await asyncio.sleep(0.02)
                res = await asyncio.gather(*[one(i) for i in range(120)], watch())
                return res[:-1]

        res = asyncio.run(flood())
        codes = [r.status_code for r in res]
        assert codes.count(429) > 0 and set(codes) <= {200, 429}, sorted(set(codes))
        for k, r in enumerate(res):  # each API's own error format, with Retry-After
            if r.status_code != 429:
                continue
            assert int(r.headers["retry-after"]) >= 1
            body = r.json()
            if k % 3 == 0:
                assert set(body) == {"error"} and "queue" in body["error"]
            elif k % 3 == 1:
                assert body["error"]["type"] == "rate_limit_error" and body["error"]["code"] == "rate_limit_exceeded"
            else:
                assert body["error_type"] == "Overloaded"
        assert {k % 3 for k, r in enumerate(res) if r.status_code == 429} == {0, 1, 2}
        assert max(depth_seen) <= 16  # the queue is bounded
        ok = [r for r in res if r.status_code == 200]
        i = next(k for k, r in enumerate(res) if r.status_code == 200 and k % 3 == 0)
        assert np.abs(np.array(res[i].json()["embeddings"]) - enc.encode([f"flood {i} {j} " * 8 for j in range(4)])).max() <= 1e-5
        assert len(ok) > 0
        assert _rss_mb() - rss0 < 300  # no unbounded buffering
        r = httpx.post(srv.url + "/v1/embeddings", json={"model": "all-minilm", "input": "still here"})
        assert r.status_code == 200
        page = httpx.get(srv.url + "/metrics").text
        assert _metric(page, "encoderkit_rejected_total", model="all-MiniLM-L6-v2") == codes.count(429)


def test_lone_requests_do_not_wait_but_concurrent_traffic_does():
    """max_wait is spent only when traffic is concurrent: a caller alone is answered without the wait. (Waits of
    1 s make the difference visible whatever the machine's load.)"""
    seen: list[int] = []
    b = Batcher("t", lambda items: (seen.append(len(items)), [2 * x for x in items])[1], max_wait_ms=1000)

    async def sequential():
        t0 = time.perf_counter()
        for i in range(3):
            assert await b.submit([i], cost=1) == [2 * i]
        return time.perf_counter() - t0

    assert asyncio.run(sequential()) < 1.5  # three 1-s waits would take >= 3 s

    async def burst_then_lone():
        await asyncio.gather(*[b.submit([i], cost=1) for i in range(8)])
        t0 = time.perf_counter()
        await b.submit([99], cost=1)  # right after concurrent traffic: the worker waits for company
        return time.perf_counter() - t0

    assert asyncio.run(burst_then_lone()) >= 0.9
    b.close()
    assert sum(seen) == 3 + 8 + 1
