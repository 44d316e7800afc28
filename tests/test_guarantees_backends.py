"""The store's guarantees under kills and concurrency, on BOTH backends (the embedded SQLite + FAISS store and
PostgreSQL + pgvector): a real `encoderkit serve` SIGKILLed with collection writes in flight leaves every request
wholly stored or wholly absent (and every acknowledged one stored) after a restart; two or three processes adding,
upserting and deleting in one collection lose no committed document, keep none they deleted, and never show the
user a "database is locked" error. (SIGKILL during a long ingest: tests/test_store_crash.py, both backends.)"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from encoderkit.store import Collection
from pg_server import collection_url, pg_url, unique_name  # noqa: F401  (pg_url: the session's server)
from store_fakes import FakeEncoder

TESTS = Path(__file__).resolve().parent


@pytest.fixture(params=["embedded", "pgvector"])
def backend(request, tmp_path):
    """(store for `serve --store`, collection location for a given name): a folder, or the session's database."""
    if request.param == "embedded":
        store = tmp_path / "store"
        return str(store), lambda name: store / name
    base = request.getfixturevalue("pg_url")
    return base, lambda name: collection_url(base, name)


# ------------------------------------------------------------------ concurrent writers
WRITER = """
import json, sys, random
sys.path.insert(0, {tests!r})
from store_fakes import FakeEncoder
from encoderkit.store import Collection
me, rounds = {me!r}, {rounds}
rng = random.Random(me)
col = Collection.open({where!r}, FakeEncoder())
for r in range(rounds):
    ids = [f"{{me}}-{{r}}-{{i}}" for i in range(10)]
    col.add([f"text of {{x}} about rivers" for x in ids], ids=ids, metadatas=[{{"w": me, "r": r}}] * 10)
    print("ADD " + json.dumps(ids), flush=True)
    col.upsert([f"shared text {{r}} from {{me}}"], ids=[f"shared-{{r % 3}}"], metadatas=[{{"w": me}}])
    if r % 3 == 2:  # delete one earlier batch of its own, by id and by filter
        gone = [f"{{me}}-{{r - 2}}-{{i}}" for i in range(5)]
        col.delete(gone)
        n = col.delete(where={{"$and": [{{"w": me}}, {{"r": r - 1}}]}})
        print("DEL " + json.dumps(gone + [f"{{me}}-{{r - 1}}-{{i}}" for i in range(10)] if n == 10 else gone), flush=True)
        assert n == 10, n
col.close()
print("DONE", flush=True)
"""


@pytest.mark.slow  # ~20-40 s: three writer processes, 24 rounds each
def test_concurrent_writers_lose_nothing_and_never_report_locks(backend, tmp_path):
    _, where_of = backend
    where = where_of(unique_name("cw"))
    Collection.open(where, FakeEncoder()).close()  # created once: the writers only open it
    procs = []
    for me in ("a", "b", "c"):
        script = tmp_path / f"writer_{me}.py"
        script.write_text(WRITER.format(tests=str(TESTS), me=me, rounds=24, where=str(where)))
        procs.append(subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}))
    added, deleted = set(), set()
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0 and "DONE" in out, err[-3000:]
        assert "locked" not in err.lower() and "busy" not in err.lower(), err[-3000:]
        for line in out.splitlines():
            kind, _, ids = line.partition(" ")
            if kind in ("ADD", "DEL"):
                (added if kind == "ADD" else deleted).update(json.loads(ids))
    col = Collection.open(where, FakeEncoder())
    try:
        assert col.check()["ok"]
        kept = sorted(added - deleted)
        assert all(h is not None for h in col.get(kept)), "a committed document is missing"
        assert all(h is None for h in col.get(sorted(deleted))), "a deleted document came back"
        shared = [h for h in col.get(["shared-0", "shared-1", "shared-2"]) if h is not None]
        assert len(shared) == 3 and col.count() == len(kept) + 3
        assert col.count({"w": "a"}) == len([i for i in kept if i.startswith("a-")]) + \
            sum(h.metadata["w"] == "a" for h in shared)
    finally:
        col.close()


# ------------------------------------------------------------------ the server killed mid-POST
def _tiny_model(tmp_path_factory) -> str:
    from tiny_checkpoints import tiny_family_folder

    return str(tiny_family_folder("bert", tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    return _tiny_model(tmp_path_factory)


def _serve(model: str, store: str, port: int) -> subprocess.Popen:
    """A real `encoderkit serve` process; returns once /health answers 200."""
    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "encoderkit.cli", "serve", "--model", model, "--store", store,
                             "--port", str(port), "--log-level", "warning", "--threads", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not come up in 300 s"
        time.sleep(0.2)


def _post_batches(url: str, name: str, batches: dict[int, list[dict]], acked: list, stop: threading.Event) -> None:
    """POST each batch of documents in turn until the server dies; record the numbers of the batches answered 200."""
    import httpx

    with httpx.Client(timeout=120) as client:
        for b, docs in batches.items():
            if stop.is_set():
                return
            try:
                r = client.post(f"{url}/collections/{name}/documents", json={"documents": docs})
            except httpx.TransportError:
                return
            if r.status_code != 200:
                acked.append(f"batch {b}: {r.status_code} {r.text[:300]}")
                return
            acked.append(b)


@pytest.mark.slow  # ~1 min: two server starts (a model load each), writes in flight killed twice
def test_server_killed_mid_post_leaves_whole_requests_only(backend, tiny_model, tmp_path):
    """Each kill leaves whole batches only, every acknowledged one stored; the restarted server (the second start)
    first serves the collection as the first kill left it (search, count), then is killed mid-write itself."""
    import httpx
    from encoderkit.serve.testing import free_port

    store, where_of = backend
    name = unique_name("kp")
    rng = random.Random(7)
    stored_batches: set[int] = set()
    batches = [[{"id": f"b{b}-{i}", "text": f"w{i} w{b} w{(i * b) % 50} words of batch {b}", "metadata": {"b": b}}
                for i in range(200)] for b in range(30)]
    for attempt in range(2):
        port = free_port()
        proc = _serve(tiny_model, store, port)
        url = f"http://127.0.0.1:{port}"
        try:
            if attempt == 0:
                r = httpx.post(f"{url}/collections", json={"name": name, "model": tiny_model})
                assert r.status_code == 201, r.text
            else:  # the restarted server serves the collection as the kill left it
                r = httpx.post(f"{url}/collections/{name}/search", json={"query": "w1 words", "k": 3})
                assert r.status_code == 200 and len(r.json()["hits"]) == 3, r.text
                assert httpx.get(f"{url}/collections/{name}").json()["documents"] == 200 * len(stored_batches)
            acked: list[int] = []
            stop = threading.Event()
            todo = [b for b in range(len(batches)) if b not in stored_batches]
            threads = [threading.Thread(target=_post_batches, args=(url, name, {b: batches[b] for b in todo[k::3]},
                                                                     acked, stop)) for k in range(3)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 300
            while len(acked) < 2 and time.monotonic() < deadline:  # kill while writes are in flight
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.3))
            os.kill(proc.pid, signal.SIGKILL)
            stop.set()
            for t in threads:
                t.join(120)
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert all(isinstance(b, int) for b in acked), acked  # every answer before the kill was a success
        assert len(acked) >= 2 and len(acked) < len(todo), "the kill did not land while writes were in flight"
        col = Collection.open(where_of(name), create=False)
        try:
            assert col.check()["ok"]
            for b, docs in enumerate(batches):
                present = [h is not None for h in col.get([d["id"] for d in docs])]
                assert all(present) or not any(present), f"batch {b}: {sum(present)} of 200 documents stored"
                if all(present):
                    stored_batches.add(b)
                else:
                    assert b not in acked, f"batch {b} was acknowledged (200) but is not stored"
            assert col.count() == 200 * len(stored_batches)
        finally:
            col.close()


# ------------------------------------------------------------------ filters the databases cannot run
def _nested(depth: int) -> dict:
    where: dict = {"n": {"$gte": 1}}
    for i in range(depth):
        where = {"$and" if i % 2 else "$or": [where, {"lang": "xx"}]}
    return where


def test_filter_limits_are_the_same_on_both_backends(backend):
    """A filter at the limits runs on both backends and agrees with the Python reference; one past them, or with a
    value no stored number can equal (NaN, a 400-digit integer), is a ValueError naming the problem (it was a
    database error: SQLite's parser stack, its expression depth, an OverflowError binding the integer)."""
    from encoderkit.store.where import MAX_CONDITIONS, MAX_DEPTH, matches

    _, where_of = backend
    col = Collection.open(where_of(unique_name("lim")), FakeEncoder())
    try:
        metas = [{"n": i, "lang": "en" if i % 2 else "de"} for i in range(6)]
        col.add([f"doc {i} river" for i in range(6)], ids=[f"d{i}" for i in range(6)], metadatas=metas)
        wide = {"$and": [{"n": {"$ne": i}} for i in range(MAX_CONDITIONS - 1)] + [{"lang": "en"}]}
        for where in (_nested(MAX_DEPTH), wide):
            expected = sum(matches(where, m) for m in metas)
            assert col.count(where) == expected and len(col.search("river", 10, where=where)) == expected
        for where, msg in ((_nested(MAX_DEPTH + 1), "nested more than"),
                           ({"$or": wide["$and"] + [{"n": 1}, {"n": 2}]}, "more than 256 comparisons"),
                           ({"n": 10 ** 400}, "401 digits"), ({"n": {"$in": [1, 2 ** 63]}}, "64-bit"),
                           ({"n": {"$gt": float("nan")}}, "NaN"), ({"n": float("-inf")}, "Infinity")):
            for run in (lambda: col.count(where), lambda: col.search("river", 3, where=where),
                        lambda: col.delete(where=where)):
                with pytest.raises(ValueError, match=msg):
                    run()
        with pytest.raises(ValueError, match="nested more than"):  # no recursion however deep
            col.search("river", 3, where=_nested(400))
        assert col.count() == 6 and col.check()["ok"]
    finally:
        col.close()
