"""Backup and restore of an embedded collection while other processes keep writing to it. A collection folder
holds `collection.db` (the truth: documents, vectors, FTS5, sparse postings and token vectors) and caches rebuilt
from it: `index.faiss` + `index.json`, and `late.faiss` + `late.json` for token vectors. A backup holds the write
lock of the collection for as long as the copy takes (writers wait, readers do not), copies the database with
SQLite's online backup API, and writes the caches from this process's own index at that same generation, so
database and indexes always match; `backup.json` describes it. Restore copies into a temporary folder, checks the
copy (Collection.check) and only then renames it into place: a failed restore leaves nothing behind.
A PostgreSQL collection is backed up with PostgreSQL's tools: `pg_backup_steps` says how."""
from __future__ import annotations

import json
import shutil
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

MANIFEST = "backup.json"
DB_NAME, INDEX_NAME, LATE_NAME = "collection.db", "index.faiss", "late.faiss"


def _fresh_folder(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} already exists and is not an empty folder; give a new folder for the backup")


def _staging(target: Path) -> Path:
    """A temporary folder beside `target` (same file system, so the final rename is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def _place(tmp: Path, target: Path) -> None:
    if target.exists():
        target.rmdir()  # empty, checked before
    tmp.rename(target)


def backup_collection(col: Any, dest: str | Path) -> dict:
    """Copy the open embedded collection `col` into the new folder `dest`, consistent at one generation even while
    other processes write. Returns the manifest written to dest/backup.json."""
    if not isinstance(col.path, Path):
        raise ValueError(pg_backup_steps(col.store, str(dest)))
    dest = Path(dest).expanduser().resolve()
    if dest == col.path.resolve() or col.path.resolve() in dest.parents:
        raise ValueError(f"the backup folder {dest} is inside the collection {col.path}; give a folder elsewhere")
    _fresh_folder(dest)
    tmp = _staging(dest)
    try:
        manifest = _copy_locked(col, tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _place(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _sqlite_copy(src: Path, dst: Path) -> None:
    """Copy the SQLite database `src` to `dst` with SQLite's online backup API (a consistent snapshot)."""
    source, target = sqlite3.connect(str(src)), sqlite3.connect(str(dst))
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def _copy_locked(col: Any, tmp: Path) -> dict:
    """Under the collection's write lock: the database by SQLite's backup API, the indexes from memory."""
    import encoderkit

    t0 = time.perf_counter()
    with col._lock, col.store.transaction():  # BEGIN IMMEDIATE: no process writes until the copy is done
        gen = col.store.generation()
        _sqlite_copy(col.path / DB_NAME, tmp / DB_NAME)  # a second connection reads the committed state (WAL)
        files = [DB_NAME]
        idx = col._sync_index()
        if idx.is_trained and idx.generation == gen:
            idx.save(tmp / INDEX_NAME, gen, col.meta["uid"])
            files += [INDEX_NAME, "index.json"]
        if "late" in col.kinds:
            late = col._sync_late()
            late.save(tmp / LATE_NAME, gen, col.meta["uid"])
            files += [LATE_NAME, "late.json"]
        documents = col.store.count()
    return {"format": 1, "collection": col.path.name, "model": col.model, "dim": col.dim, "kinds": list(col.kinds),
            "documents": documents, "generation": gen, "uid": col.meta["uid"], "files": files,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "encoderkit": encoderkit.__version__,
            "locked_seconds": round(time.perf_counter() - t0, 3)}


def read_manifest(src: Path) -> dict:
    """The manifest of a backup folder; ValueError when `src` is not one."""
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except FileNotFoundError:
        raise ValueError(f"{src} is not a collection backup (no {MANIFEST}); make one with "
                         "`encoderkit index backup NAME DEST`") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{src / MANIFEST} is unreadable ({exc}); the backup is damaged") from None
    missing = [f for f in manifest.get("files", [DB_NAME]) if not (src / f).is_file()]
    if missing or not isinstance(manifest, dict):
        raise ValueError(f"backup {src} is incomplete: {', '.join(missing) or MANIFEST} missing")
    return manifest


def restore_collection(src: str | Path, path: str | Path) -> dict:
    """Restore the backup folder `src` as the collection folder `path` (which must not hold a collection yet).
    The copy is checked before it is put in place. Returns {path, documents, generation, check}."""
    from encoderkit.store.collection import Collection

    src, path = Path(src).expanduser(), Path(path).expanduser()
    manifest = read_manifest(src)
    if (path / DB_NAME).exists():
        raise FileExistsError(f"a collection already exists at {path}; restore under another name, or delete it "
                              "first (encoderkit index delete)")
    _fresh_folder(path)
    tmp = _staging(path)
    try:
        _sqlite_copy(src / DB_NAME, tmp / DB_NAME)
        for name in manifest.get("files", []):
            if name != DB_NAME:
                shutil.copy2(src / name, tmp / name)
        col = Collection.open(tmp, create=False)
        try:
            check = col.check()
            documents, gen = col.count(), col.store.generation()
        finally:
            col.store.close()  # no flush: the copied indexes stay as they were written
        if not check["ok"] or documents != manifest.get("documents") or gen != manifest.get("generation"):
            raise ValueError(f"backup {src} does not restore cleanly ({documents} documents at generation {gen}, the "
                             f"manifest says {manifest.get('documents')} at {manifest.get('generation')}; "
                             f"{'; '.join(check['problems']) or 'no other problem'}); the backup is damaged")
        _place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"path": str(path), "documents": documents, "generation": gen, "check": check}


def pg_backup_steps(store: Any, dest: str) -> str:
    """How to back up and restore a PostgreSQL collection with pg_dump / pg_restore (its tables and its rows of
    encoderkit_meta); the database URL is left as $DATABASE_URL so no password is printed."""
    from encoderkit.store.pg_store import META_COLUMNS, META_TABLE

    table, name = store.table_name, store.name
    tables = " ".join(f"--table={t}" for t in (table, f"{table}_sparse", f"{table}_tokens"))
    return (f"collection {name!r} lives in PostgreSQL ({store.where}); back it up with PostgreSQL's own tools "
            f"(set DATABASE_URL to that database's URL):\n"
            f"  mkdir -p {dest}\n"
            f"  pg_dump --dbname=\"$DATABASE_URL\" --format=custom {tables} --file={dest}/{table}.dump\n"
            f"  psql \"$DATABASE_URL\" -c \"\\copy (SELECT * FROM {META_TABLE} WHERE collection = '{name}') "
            f"TO '{dest}/{table}.meta.csv' CSV\"\n"
            f"restore it (into a database where the collection does not exist yet; the first line needs a user "
            f"allowed to create the vector extension, or the extension already there):\n"
            f"  psql \"$DATABASE_URL\" -v ON_ERROR_STOP=1 -c \"CREATE EXTENSION IF NOT EXISTS vector\" "
            f"-c \"CREATE TABLE IF NOT EXISTS {META_TABLE} {META_COLUMNS}\"\n"
            f"  pg_restore --exit-on-error --dbname=\"$DATABASE_URL\" {dest}/{table}.dump\n"
            f"  psql \"$DATABASE_URL\" -c \"\\copy {META_TABLE} FROM '{dest}/{table}.meta.csv' CSV\"\n"
            f"(pg_dump's snapshot is consistent while writers run; --table names that do not exist are skipped "
            f"with a warning)")
