"""The PostgreSQL + pgvector source of truth of a collection: the same store interface as `SQLiteStore`
(documents, JSONB metadata, vectors, a keyword index, a `generation` counter bumped by every write), plus
vector search inside the database, since pgvector's HNSW / IVFFlat indexes replace the FAISS cache.

A collection NAME lives in a database as two things (in the connection's current schema):
- table `encoderkit_NAME`: rid, id, text, metadata jsonb, hash, embedding vector(dim), and
  tsv tsvector GENERATED from the text (GIN index; ranked with ts_rank_cd);
- rows of table `encoderkit_meta` (collection, key, value): model, dim, metric, index, fts, uid, generation.
Its URL is the libpq URL of the database plus `collection=NAME`: postgresql://user@host:5432/db?collection=NAME.
The database URL alone (a "store", as a folder is for embedded collections) lists them: `list_collections`."""
from __future__ import annotations

import json
import re
import struct
from typing import Any, Iterable, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import psycopg
from psycopg import sql
from psycopg.adapt import Dumper, Loader
from psycopg.pq import Format
from psycopg.types import TypeInfo

from encoderkit.store.faiss_index import METRICS, train_size
from encoderkit.store.where import compile_where_pg

SCHEMA_VERSION = "pg1"
META_TABLE = "encoderkit_meta"
META_COLUMNS = "(collection text NOT NULL, key text NOT NULL, value text NOT NULL, PRIMARY KEY (collection, key))"
FTS_CONFIG = "english"  # Snowball English stemmer and stop words (FTS5 side: porter, no stop words)
RANK_NORMALIZATION = 1  # ts_rank_cd: divide by 1 + log(document length)
MAX_INDEX_DIM = 2000    # pgvector indexes `vector` columns of at most 2,000 dimensions
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_FACTORY = re.compile(r"(Flat|HNSW(\d+)|IVF(\d+),Flat)")
# metric -> (pgvector distance operator, index operator class); a score is "higher = closer" as with FAISS
_OPS = {"cosine": ("<=>", "vector_cosine_ops"), "ip": ("<#>", "vector_ip_ops"), "l2": ("<->", "vector_l2_ops")}


DriverError = psycopg.Error  # what the database driver raises (a lost connection mid-query, ...)


def _storable(ids: Iterable[str]) -> list[str]:
    """The ids a row can have: PostgreSQL text cannot hold NUL (insert refuses it), so such an id is missing."""
    return [i for i in ids if "\x00" not in i]


def check_name(name: str) -> None:
    """Raise ValueError unless `name` can name a collection (its table is encoderkit_NAME)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"bad collection name {name!r} for a PostgreSQL store: use lowercase letters, digits and "
                         "'_', starting with a letter, at most 40 characters")


def is_pg_url(path: Any) -> bool:
    return isinstance(path, str) and path.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    return re.sub(r"(://[^:/@?]*):[^@/?]+@", r"\1:***@", url)


def _split(url: str):
    """urlsplit with a readable error for a malformed URL (bad IPv6 brackets, a port that is no number)."""
    try:
        parts = urlsplit(url)
        if "," not in parts.netloc:  # libpq's multi-host form host1:p1,host2:p2 is left to libpq
            parts.port  # noqa: B018  (raises ValueError for a port that is not a number 0-65535)
    except ValueError as exc:
        raise ValueError(f"malformed PostgreSQL URL {redact(url)}: {exc}; expected "
                         "postgresql://user[:password]@host[:port]/database") from None
    return parts


def parse_url(url: str) -> tuple[str, str]:
    """(libpq connection URL without `collection`, collection name) from postgresql://...?collection=NAME."""
    parts = _split(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = [v for k, v in query if k == "collection"]
    if not names:
        raise ValueError(f"name the collection in the URL: {redact(url)}{'&' if parts.query else '?'}collection=NAME "
                         "(one database holds many collections)")
    name = names[-1]
    if not _NAME.fullmatch(name):
        raise ValueError(f"bad collection name {name!r} in {redact(url)}: use lowercase letters, digits and '_', "
                         "starting with a letter, at most 40 characters")
    rest = urlencode([(k, v) for k, v in query if k != "collection"], safe="/")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment)), name


def database_url(url: str) -> str:
    """The URL of a database holding collections (a store), checked: well formed and naming no collection."""
    parts = _split(url)
    if any(k == "collection" for k, _ in parse_qsl(parts.query, keep_blank_values=True)):
        raise ValueError(f"{redact(url)} names a collection; a store is the database URL alone "
                         "(postgresql://user@host:port/db) and the collection is named separately")
    return url


def collection_url(store: str, name: str) -> str:
    """The URL of collection `name` in the database at `store`: postgresql://user@host:port/db?collection=NAME."""
    store = database_url(store)
    url = f"{store}{'&' if urlsplit(store).query else '?'}collection={name}"
    parse_url(url)  # a readable error for a name PostgreSQL tables cannot take
    return url


def connect(conninfo: str, connect_timeout: int = 10) -> psycopg.Connection:
    """An autocommit connection; a malformed URL raises ValueError, an unreachable server or a missing database
    ConnectionError, each naming the URL without its password."""
    try:
        return psycopg.connect(conninfo, autocommit=True, connect_timeout=connect_timeout)
    except psycopg.OperationalError as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ConnectionError(f"cannot connect to PostgreSQL at {redact(conninfo)}: {detail}. Is the server "
                              "running, and are host, port, user, password and database right?") from None
    except psycopg.ProgrammingError as exc:  # libpq could not parse the URL
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"malformed PostgreSQL URL {redact(conninfo)}: {detail}") from None


def list_collections(url: str, connect_timeout: int = 10) -> list[str]:
    """Names of the collections recorded in the database at `url` (a store URL), sorted. Reads only."""
    conn = connect(database_url(url), connect_timeout)
    try:
        if conn.execute("SELECT to_regclass(%s) IS NULL", (META_TABLE,)).fetchone()[0]:
            return []
        rows = conn.execute(sql.SQL("SELECT collection FROM {} WHERE key = 'model' ORDER BY collection")
                            .format(sql.Identifier(META_TABLE))).fetchall()
    finally:
        conn.close()
    return [r[0] for r in rows]


def check_database(url: str, connect_timeout: int = 10) -> None:
    """Raise the error a first use would (malformed URL, unreachable server, missing database, no pgvector) now:
    for a server to refuse to start rather than fail on its first request."""
    conn = connect(database_url(url), connect_timeout)
    try:
        _ensure_pgvector(conn, redact(url))
    finally:
        conn.close()


def _ensure_pgvector(conn: psycopg.Connection, where: str) -> tuple[int, ...]:
    """Create the pgvector extension if missing (or say who must), register the numpy <-> vector adapters on
    `conn`; returns pgvector's version."""
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as exc:
            why = " ".join(str(exc).split())
            db = conn.info.dbname
            if conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone() is None:
                raise RuntimeError(f"the pgvector extension is not available on the PostgreSQL server of "
                                   f"{where} ({why}); install pgvector on the server "
                                   "(https://github.com/pgvector/pgvector), then retry") from None
            raise RuntimeError(f"the pgvector extension is not installed in database {db!r} and user "
                               f"{conn.info.user!r} cannot install it ({why}); ask the database owner or a "
                               f"superuser to run: CREATE EXTENSION vector;") from None
    version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
    info = TypeInfo.fetch(conn, "vector")
    if info is None:
        raise RuntimeError(f"pgvector is installed in database {conn.info.dbname!r} but its type `vector` is "
                           "not on the search_path; add the extension's schema to search_path")
    dumper = type("VectorDumper", (_VectorDumper,), {"oid": info.oid})  # this database's oid of `vector`
    conn.adapters.register_dumper(np.ndarray, dumper)
    conn.adapters.register_loader(info.oid, _VectorLoader)
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


def check_factory_pg(factory: str, dim: int, metric: str) -> None:
    """Raise a readable error unless pgvector can index `factory` for this dim/metric."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    m = _FACTORY.fullmatch(factory)
    if m is None:
        raise ValueError(f"pgvector cannot build index {factory!r}: use 'Flat' (exact scan), 'HNSW{{m}}' "
                         "(e.g. 'HNSW16', m from 2 to 100) or 'IVF{lists},Flat' (e.g. 'IVF100,Flat')")
    if m.group(2) is not None and not 2 <= int(m.group(2)) <= 100:
        raise ValueError(f"pgvector cannot build index {factory!r}: HNSW m must be between 2 and 100")
    if m.group(3) is not None and not 1 <= int(m.group(3)) <= 32768:
        raise ValueError(f"pgvector cannot build index {factory!r}: IVF lists must be between 1 and 32768")
    if factory != "Flat" and dim > MAX_INDEX_DIM:
        raise ValueError(f"pgvector cannot build index {factory!r} for dim {dim}: its indexes hold at most "
                         f"{MAX_INDEX_DIM} dimensions; use index='Flat' (exact scan)")


class PgStore:
    """Documents + vectors + full-text search of one collection in PostgreSQL. Every public write is one
    transaction; reads see every committed write of any process (there is no cache to go stale)."""

    def __init__(self, url: str, connect_timeout: int = 10):
        self.url = url
        conninfo, self.name = parse_url(url)
        self.where = redact(url)
        self.conn = connect(conninfo, connect_timeout)
        try:
            self.pgvector = _ensure_pgvector(self.conn, self.where)
            with self.transaction():
                self._lock("encoderkit_meta")
                self.conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} " + META_COLUMNS)
                                  .format(sql.Identifier(META_TABLE)))
        except BaseException:
            self.conn.close()
            raise
        self.table = sql.Identifier(f"encoderkit_{self.name}")
        self.table_name = f"encoderkit_{self.name}"

    def _lock(self, key: str) -> None:
        """A transaction-scoped advisory lock (serializes schema changes between processes)."""
        self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))

    # ------------------------------------------------------------------ meta / schema
    def meta(self) -> dict[str, str]:
        rows = self.conn.execute(sql.SQL("SELECT key, value FROM {} WHERE collection = %s")
                                 .format(sql.Identifier(META_TABLE)), (self.name,)).fetchall()
        return dict(rows)

    def table_exists(self) -> bool:
        return self.conn.execute("SELECT to_regclass(%s) IS NOT NULL", (self.table_name,)).fetchone()[0]

    def column_dim(self) -> int | None:
        """The declared dimension of the embedding column (vector(d) stores d as its type modifier)."""
        row = self.conn.execute("SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                                "AND attname = 'embedding' AND NOT attisdropped", (self.table_name,)).fetchone()
        return int(row[0]) if row else None

    def create(self, meta: dict[str, str]) -> dict[str, str]:
        """Create the table, its indexes and the meta rows in one transaction (unless another process just did:
        then its meta is returned)."""
        with self.transaction():
            self._lock(f"encoderkit:{self.name}")
            have = self.meta()
            if "model" in have:
                return have
            if self.table_exists():
                raise RuntimeError(f"table {self.table_name} already exists in {self.where} but is not a recorded "
                                   "encoderkit collection; pick another collection name or drop that table")
            t = self.table
            self.conn.execute(sql.SQL(
                "CREATE TABLE {t} ("
                " rid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"  # never reused, like SQLite's AUTOINCREMENT
                " id text NOT NULL UNIQUE, text text NOT NULL, metadata jsonb NOT NULL DEFAULT '{{}}',"
                " hash text NOT NULL, embedding vector({dim}) NOT NULL,"
                " tsv tsvector GENERATED ALWAYS AS (to_tsvector({cfg}::regconfig, text)) STORED)").format(
                t=t, dim=sql.Literal(int(meta["dim"])), cfg=sql.Literal(meta["fts"])))
            self.conn.execute(sql.SQL("CREATE INDEX {} ON {} (hash)").format(self._ix("hash"), t))
            self.conn.execute(sql.SQL("CREATE INDEX {} ON {} USING gin (tsv)").format(self._ix("tsv"), t))
            self.conn.cursor().executemany(sql.SQL("INSERT INTO {} (collection, key, value) VALUES (%s, %s, %s)")
                                  .format(sql.Identifier(META_TABLE)), [(self.name, k, str(v)) for k, v in meta.items()])
            self.ensure_ann_index(meta["index"], meta["metric"])
        return self.meta()

    def drop(self, lock_timeout_s: float = 30.0) -> bool:
        """Drop this collection in one transaction: its table (its indexes go with it) and its rows of
        encoderkit_meta; no other table or meta row is touched. False (and nothing dropped) when NAME is not a
        recorded collection, so a same-named table encoderkit did not create is left alone. Waits at most
        lock_timeout_s for other sessions' transactions on the table (RuntimeError after that)."""
        try:
            with self.transaction():
                self._lock(f"encoderkit:{self.name}")  # not while another process creates it
                if "model" not in self.meta():
                    return False
                self.conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(lock_timeout_s * 1000)}ms",))
                side = [sql.Identifier(f"{self.table_name}_{x}") for x in ("sparse", "tokens")]  # store/pg_kinds.py
                self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.SQL(", ").join([*side, self.table])))
                self.conn.execute(sql.SQL("DELETE FROM {} WHERE collection = %s").format(sql.Identifier(META_TABLE)),
                                  (self.name,))
        except psycopg.errors.LockNotAvailable:
            raise RuntimeError(f"collection {self.name!r} at {self.where} is busy (a transaction of another session "
                               f"held it for {lock_timeout_s:g} s); nothing was dropped, retry") from None
        return True

    def usable(self) -> bool:
        """False once the connection is closed or broken (server restarted, network lost)."""
        return not self.conn.closed and not self.conn.broken

    def _ix(self, suffix: str) -> sql.Identifier:
        return sql.Identifier(f"{self.table_name}_{suffix}")

    def ann_index(self) -> tuple[str, bool] | None:
        """(access method, valid) of the vector index, or None when there is none."""
        row = self.conn.execute("SELECT am.amname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                                "JOIN pg_am am ON am.oid = c.relam WHERE c.oid = to_regclass(%s)",
                                (f"{self.table_name}_ann",)).fetchone()
        return (row[0], bool(row[1])) if row else None

    def ensure_ann_index(self, factory: str, metric: str) -> bool:
        """Build the HNSW / IVFFlat index the factory asks for if it is missing (IVFFlat only once the table
        holds enough vectors to train its lists, as FAISS IVF: until then search is exact). True if built now."""
        m = _FACTORY.fullmatch(factory)
        if factory == "Flat" or self.ann_index() is not None:
            return False
        if m.group(3) is not None and self.count() < max(train_size(factory), 1):
            return False
        ops = sql.SQL(_OPS[metric][1])
        if m.group(2) is not None:
            M = int(m.group(2))
            how = sql.SQL("hnsw (embedding {}) WITH (m = {}, ef_construction = {})").format(
                ops, sql.Literal(M), sql.Literal(max(80, 2 * M)))
        else:
            how = sql.SQL("ivfflat (embedding {}) WITH (lists = {})").format(ops, sql.Literal(int(m.group(3))))
        with self.transaction():
            self._lock(f"encoderkit:{self.name}:ann")
            self.conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING ").format(self._ix("ann"), self.table)
                              + how)
        return True

    def generation(self) -> int:
        row = self.conn.execute(sql.SQL("SELECT value FROM {} WHERE collection = %s AND key = 'generation'")
                                .format(sql.Identifier(META_TABLE)), (self.name,)).fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ transactions
    def transaction(self) -> psycopg.Transaction:
        """`with store.transaction():` BEGIN ... COMMIT, rolled back on any exception (a savepoint when nested)."""
        return self.conn.transaction()

    def _bump(self) -> int:
        row = self.conn.execute(sql.SQL("UPDATE {} SET value = (value::bigint + 1)::text WHERE collection = %s "
                                        "AND key = 'generation' RETURNING value").format(sql.Identifier(META_TABLE)),
                                (self.name,)).fetchone()  # the row lock also orders concurrent writers
        return int(row[0])

    # ------------------------------------------------------------------ writes (inside a transaction)
    def insert(self, ids: list[str], texts: list[str], metadatas: list[dict], hashes: list[str],
               vectors: np.ndarray) -> list[int]:
        """Insert rows; returns their rids. Raises ValueError naming the first id that already exists, or a
        document PostgreSQL cannot store (NUL characters, NaN in metadata, text too long to index)."""
        rows = []
        for id_, text, md, h, v in zip(ids, texts, metadatas, hashes, vectors):
            try:
                mdj = json.dumps(md, ensure_ascii=False, allow_nan=False)
            except ValueError:
                raise ValueError(f"metadata of document {id_!r} holds NaN or Infinity, which PostgreSQL JSONB "
                                 "cannot store") from None
            if "\x00" in text or "\x00" in id_ or "\\u0000" in mdj:
                raise ValueError(f"document {id_!r} contains a NUL character (\\x00), which PostgreSQL cannot store")
            rows.append((id_, text, mdj, h, v))
        with self.transaction():
            taken = self.conn.execute(sql.SQL("SELECT id FROM {} WHERE id = ANY(%s) LIMIT 1").format(self.table),
                                      (list(ids),)).fetchone()
            if taken:
                raise ValueError(f"a document with id {taken[0]!r} already exists; use upsert() to replace it")
            cur = self.conn.cursor()
            try:
                cur.executemany(sql.SQL("INSERT INTO {} (id, text, metadata, hash, embedding) "
                                        "VALUES (%s, %s, %s::jsonb, %s, %b) RETURNING rid").format(self.table),
                                rows, returning=True)
            except psycopg.errors.UniqueViolation as exc:  # a concurrent writer took the id meanwhile
                raise ValueError(f"a document id already exists ({exc.diag.message_detail}); use upsert() to "
                                 "replace it") from None
            except psycopg.errors.ProgramLimitExceeded as exc:
                raise ValueError(f"a document is too long for PostgreSQL full-text search ({exc.diag.message_primary}); "
                                 "split it (ingest chunk_tokens) before adding") from None
            rids = []
            while True:
                rids.append(int(cur.fetchone()[0]))
                if not cur.nextset():
                    break
            self._bump()
        return rids

    def delete_ids(self, ids: Iterable[str]) -> list[int]:
        """Delete rows by user id; returns the rids removed (missing ids are ignored)."""
        ids = _storable(ids)
        with self.transaction():
            # the generation row lock first: a concurrent upsert of the same id waits here, so the DELETE below sees
            # the row it committed (taken after the DELETE, an upsert racing another failed with "already exists")
            self._bump()
            rows = self.conn.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s) RETURNING rid").format(self.table),
                                     (list(ids),)).fetchall()
        return [int(r[0]) for r in rows]

    # ------------------------------------------------------------------ reads
    def _where(self, where: dict | str | None) -> tuple[sql.Composable, list]:
        cond, params = compile_where_pg(where)
        return sql.SQL(cond), params

    def count(self, where: dict | str | None = None) -> int:
        cond, params = self._where(where)
        return int(self.conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE ").format(self.table) + cond,
                                     params).fetchone()[0])

    def is_empty(self) -> bool:
        return not self.conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(self.table)).fetchone()[0]

    def rows_by_ids(self, ids: list[str]) -> dict[str, tuple]:
        """id -> (id, text, metadata JSON, rid)."""
        rows = self.conn.execute(sql.SQL("SELECT id, text, metadata::text, rid FROM {} WHERE id = ANY(%s)")
                                 .format(self.table), (_storable(ids),)).fetchall()
        return {r[0]: r for r in rows}

    def rows_by_rids(self, rids: list[int]) -> dict[int, tuple]:
        """rid -> (id, text, metadata JSON)."""
        rows = self.conn.execute(sql.SQL("SELECT rid, id, text, metadata::text FROM {} WHERE rid = ANY(%s)")
                                 .format(self.table), ([int(r) for r in rids],)).fetchall()
        return {int(r[0]): r[1:] for r in rows}

    def _column_of(self, column: str, key: str, values: list[str]) -> list[tuple]:
        return self.conn.execute(sql.SQL("SELECT {}, {} FROM {} WHERE {} = ANY(%s)").format(
            sql.Identifier(key), sql.Identifier(column), self.table, sql.Identifier(key)),
            (_storable(values),)).fetchall()

    def existing_hashes(self, hashes: list[str]) -> set[str]:
        return {r[0] for r in self._column_of("hash", "hash", list(set(hashes)))}

    def hashes_by_ids(self, ids: list[str]) -> dict[str, str]:
        return dict(self._column_of("hash", "id", list(set(ids))))

    def existing_ids(self, ids: list[str]) -> set[str]:
        return {r[0] for r in self._column_of("id", "id", list(set(ids)))}

    def filter_rids(self, where: dict | str | None) -> np.ndarray:
        """rids of documents matching `where` (int64, sorted)."""
        cond, params = self._where(where)
        rows = self.conn.execute(sql.SQL("SELECT rid FROM {} WHERE ").format(self.table) + cond + sql.SQL(" ORDER BY rid"),
                                 params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def all_rids(self) -> np.ndarray:
        return self.filter_rids(None)

    def iter_vectors(self, dim: int, rids: np.ndarray | None = None, batch: int = 20000,
                     with_ids: bool = False) -> Iterator[tuple]:
        """(rids, vectors) in batches: all documents, or only `rids`; (rids, vectors, ids) when with_ids."""
        last = -1
        wanted = None if rids is None else [int(r) for r in rids]
        cur = self.conn.cursor(binary=True)
        while True:
            if wanted is None:
                cur.execute(sql.SQL("SELECT rid, embedding, id FROM {} WHERE rid > %s ORDER BY rid LIMIT %s")
                            .format(self.table), (last, batch))
            else:
                chunk, wanted = wanted[:batch], wanted[batch:]
                if not chunk:
                    return
                cur.execute(sql.SQL("SELECT rid, embedding, id FROM {} WHERE rid = ANY(%s) ORDER BY rid")
                            .format(self.table), (chunk,))
            rows = cur.fetchall()
            if not rows and wanted is None:
                return
            if rows:
                r = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
                X = np.frombuffer(b"".join(row[1] for row in rows), dtype=">f4").astype(np.float32).reshape(len(rows), dim)
                yield (r, X, [row[2] for row in rows]) if with_ids else (r, X)
                last = int(r[-1])

    def vector_search(self, q: np.ndarray, k: int, metric: str, where: dict | str | None = None, *,
                      exact: bool = False, ef_search: int = 128, nprobe: int = 16) -> list[tuple[int, float]]:
        """(rid, score; higher is closer) of the k nearest vectors matching `where`: exact (a scan ordered by
        distance, ties by rid) or through the HNSW / IVFFlat index with iterative scans (pgvector >= 0.8), so a
        filter is applied before top-k rather than after it."""
        op = _OPS[metric][0]
        cond, params = self._where(where)
        order = sql.SQL("d, rid") if exact else sql.SQL("d")  # a second sort key keeps the planner off the index
        query = (sql.SQL("SELECT rid, embedding {} %b AS d FROM {} WHERE ").format(sql.SQL(op), self.table) + cond
                 + sql.SQL(" ORDER BY ") + order + sql.SQL(" LIMIT %s"))
        q = np.ascontiguousarray(q, dtype=np.float32)
        with self.transaction():
            if not exact:
                self.conn.execute("SELECT set_config('hnsw.ef_search', %s, true), set_config('ivfflat.probes', %s, true)",
                                  (str(min(max(int(ef_search), k, 1), 1000)), str(max(int(nprobe), 1))))
                if self.pgvector >= (0, 8):  # iterative index scans: keep scanning until k rows pass the filter
                    self.conn.execute("SELECT set_config('hnsw.iterative_scan', 'strict_order', true), "
                                      "set_config('ivfflat.iterative_scan', 'relaxed_order', true)")
            rows = self.conn.execute(query, [q, *params, int(k)]).fetchall()
        if metric == "cosine":
            out = [(int(r), 1.0 - float(d)) for r, d in rows]
        elif metric == "ip":
            out = [(int(r), -float(d)) for r, d in rows]  # <#> is the negative inner product
        else:
            out = [(int(r), -float(d) * float(d)) for r, d in rows]  # negated squared L2, as FAISS / SQLite
        if not exact:  # ivfflat's relaxed order may swap close neighbours
            out.sort(key=lambda t: (-t[1], t[0]))
        return out

    def keyword_search(self, text: str, k: int, where: dict | str | None = None,
                       fts: str = FTS_CONFIG) -> list[tuple[int, float]]:
        """(rid, score; higher is better) of documents holding any word of free text, filtered by `where`.
        score = sum over the query's lexemes t of idf(t) * ts_rank_cd(tsv, t, RANK_NORMALIZATION): ts_rank_cd
        alone has no idf, so a common word weighs as much as a rare one (SciFact NDCG@10 0.33 that way; idf is
        the BM25 one, document frequencies counted through the GIN index). The terms are summed in lexeme order:
        float addition is not associative, and a sum in the join's order gave equal documents scores a last bit
        apart, so ties fell by physical row order (a restored table ranked them unlike the original), not by rid."""
        if not re.search(r"\w", text):
            return []
        text = text.replace("\x00", " ")  # PostgreSQL text cannot hold NUL; it is no part of a word anyway
        cond, params = self._where(where)
        cfg = sql.Literal(fts)
        query = sql.SQL(
            "WITH terms AS (SELECT DISTINCT l, quote_literal(l)::tsquery AS q "
            "               FROM unnest(tsvector_to_array(to_tsvector({cfg}::regconfig, %s))) AS l),"
            " n AS (SELECT count(*) AS n FROM {t}),"
            " w AS (SELECT l, q, ln(1 + (n.n - df.df + 0.5) / (df.df + 0.5)) AS idf FROM terms, n,"
            "       LATERAL (SELECT count(*) AS df FROM {t} WHERE tsv @@ terms.q) AS df) "
            "SELECT rid, sum(w.idf * ts_rank_cd(tsv, w.q, {norm}) ORDER BY w.l) AS s FROM {t} JOIN w ON tsv @@ w.q "
            "WHERE "
        ).format(cfg=cfg, t=self.table, norm=sql.Literal(RANK_NORMALIZATION)) + cond + sql.SQL(
            " GROUP BY rid ORDER BY s DESC, rid LIMIT %s")
        rows = self.conn.execute(query, [text, *params, int(k)]).fetchall()
        return [(int(r), float(s)) for r, s in rows]

    # ------------------------------------------------------------------ integrity
    def problems(self, dim: int, factory: str, fts: str) -> list[str]:
        """Where the table, its full-text column and its indexes disagree with the collection's meta."""
        problems = []
        if not self.table_exists():
            return [f"table {self.table_name} is missing from {self.where}"]
        if self.column_dim() != dim:
            problems.append(f"column embedding is vector({self.column_dim()}), the collection has dim {dim}")
        t = self.table
        bad = self.conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE vector_dims(embedding) <> %s").format(t),
                                (dim,)).fetchone()[0]
        if bad:
            problems.append(f"{bad} stored vectors do not have {dim} values")
        stale = self.conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE tsv IS DISTINCT FROM "
                                          "to_tsvector({}::regconfig, text)").format(t, sql.Literal(fts))).fetchone()[0]
        if stale:
            problems.append(f"the full-text column disagrees with the text of {stale} documents")
        for suffix, what in (("tsv", "full-text (GIN)"), ("hash", "content hash")):
            ok = self.conn.execute("SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(%s)",
                                   (f"{self.table_name}_{suffix}",)).fetchone()
            if ok is None or not ok[0]:
                problems.append(f"the {what} index {self.table_name}_{suffix} is "
                                f"{'missing' if ok is None else 'invalid (REINDEX it)'}")
        m = _FACTORY.fullmatch(factory)
        ann = self.ann_index()
        want = None if factory == "Flat" else ("hnsw" if m.group(2) else "ivfflat")
        due = want == "hnsw" or (want == "ivfflat" and self.count() >= train_size(factory))
        if ann is None and due:
            problems.append(f"the {want} vector index {self.table_name}_ann is missing (searches scan the whole "
                            "table); reopening the collection rebuilds it")
        elif ann is not None and (ann[0] != want or not ann[1]):
            problems.append(f"the vector index {self.table_name}_ann is {ann[0]}{'' if ann[1] else ' (invalid)'}, "
                            f"the collection's index is {factory!r}; drop it and reopen the collection")
        return problems

    def size_bytes(self) -> int:
        return int(self.conn.execute("SELECT pg_total_relation_size(to_regclass(%s))",
                                     (self.table_name,)).fetchone()[0] or 0)

    def close(self) -> None:
        self.conn.close()


class _VectorDumper(Dumper):
    """numpy float vector -> pgvector's binary format: uint16 dim, uint16 unused, dim big-endian float32."""
    format = Format.BINARY

    def dump(self, obj: np.ndarray) -> bytes:
        a = np.asarray(obj, dtype=">f4").reshape(-1)
        return struct.pack(">HH", a.shape[0], 0) + a.tobytes()


class _VectorLoader(Loader):
    """pgvector's binary format -> the big-endian float32 bytes (decoded in bulk by iter_vectors)."""
    format = Format.BINARY

    def load(self, data: Any) -> bytes:
        return bytes(data[4:])
