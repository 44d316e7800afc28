"""Crash safety, on both backends (embedded SQLite + FAISS, PostgreSQL + pgvector): a child process ingests a large
JSONL in batches and is SIGKILLed at random moments, several times; after each kill the collection opens, passes
its integrity check (table, keyword and vector index agree), holds every document whose batch had been committed,
and holds exactly a prefix of the file in whole batches (never half a batch). A final run completes the ingest."""
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
CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from store_fakes import FakeEncoder
from encoderkit.store import Collection
col = Collection.open({col!r}, FakeEncoder(), index={index!r})
def committed(report, ids):
    print("COMMIT " + json.dumps(ids), flush=True)
col.ingest({data!r}, batch_size=40, chunk_tokens=0, progress=False, on_commit=committed)
col.close()
print("DONE", flush=True)
"""


def _run_child(script: Path, kill_at: tuple[int, float] | None) -> tuple[set[str], bool]:
    """Run the ingest child. With `kill_at=(k, delay)`, SIGKILL it `delay` seconds after its k-th commit that
    wrote documents: the kill is tied to progress, not to wall time, so a fast machine cannot finish the ingest
    before the kill. Returns (ids it reported committed, whether it finished)."""
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines: list[str] = []
    reached = threading.Event()
    target = kill_at[0] if kill_at is not None else None

    def read():
        writes = 0
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("COMMIT ") and json.loads(line[7:]):
                writes += 1
                if target is not None and writes >= target:
                    reached.set()
        reached.set()  # the child ended (finished or crashed) before the target

    t = threading.Thread(target=read, daemon=True)
    t.start()
    if kill_at is not None:
        if not reached.wait(timeout=300):
            proc.kill()
            raise AssertionError(f"child made {target} commits in 300 s: {proc.stderr.read()[-2000:]}")
        time.sleep(kill_at[1])
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=300)
    t.join(timeout=10)
    err = proc.stderr.read()
    done = any(line.startswith("DONE") for line in lines)
    if kill_at is None:
        assert proc.returncode == 0, err[-3000:]
    committed = set()
    for line in lines:
        if line.startswith("COMMIT "):
            committed.update(json.loads(line[7:]))
    return committed, done


def _present_prefix(col, ids: list[str], batch: int) -> int:
    """How many of `ids` (the file's order) are stored; asserts they are exactly a prefix of whole batches."""
    present = [h is not None for h in col.get(ids)]
    n = sum(present)
    assert present == [True] * n + [False] * (len(ids) - n), "the stored documents are not a prefix of the file"
    assert n % batch == 0, f"{n} documents stored: half a batch of {batch} was left behind"
    return n


@pytest.mark.slow  # about 30-60 s: five child processes, 4,000 small documents
@pytest.mark.parametrize("backend,index", [("embedded", "Flat"), ("embedded", "HNSW32"), ("pgvector", "HNSW16")])
def test_sigkill_during_ingest(tmp_path, request, backend, index):
    rng = random.Random(1234)
    n = 4000
    data = tmp_path / "big.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        for i in range(n):
            words = " ".join(rng.choice("sun sea sand river snow code music bread tea city".split())
                             for _ in range(rng.randint(4, 12)))
            f.write(json.dumps({"id": f"doc{i}", "text": f"{words} number {i}", "n": i}) + "\n")
    col_dir = tmp_path / "col" if backend == "embedded" else collection_url(request.getfixturevalue("pg_url"),
                                                                             unique_name("crash"))
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(TESTS), col=str(col_dir), index=index, data=str(data)))
    committed_ever: set[str] = set()
    kills = 0
    for attempt in range(4):
        # 100 batches of 40 in all; each run is killed a moment after its 3rd..15th batch that wrote something
        committed, done = _run_child(script, kill_at=(rng.randint(3, 15), rng.uniform(0.0, 0.05)))
        committed_ever |= committed
        kills += not done
        col = Collection.open(col_dir, FakeEncoder())
        report = col.check()
        assert report["ok"], (attempt, report)
        present = col.get(sorted(committed_ever))
        missing = [i for i, h in zip(sorted(committed_ever), present) if h is None]
        assert not missing, f"after kill {attempt}: {len(missing)} committed documents missing, e.g. {missing[:3]}"
        assert col.count() == _present_prefix(col, [f"doc{i}" for i in range(n)], 40)
        # what is there is searchable both ways
        some = sorted(committed_ever)[:: max(1, len(committed_ever) // 5)]
        for doc_id in some:
            text = col.get(doc_id).text
            assert doc_id in [h.id for h in col.search(text, k=5)]
            assert doc_id in [h.id for h in col.search(f"number {doc_id[3:]}", k=5, mode="keyword")]
        col.store.close()  # leave the saved index as the killed child left it
    assert kills >= 3, "the child finished before being killed too often; the test did not exercise crashes"
    committed, done = _run_child(script, kill_at=None)
    assert done
    col = Collection.open(col_dir, FakeEncoder())
    assert col.count() == n and col.check()["ok"]
    col.close()
