"""API keys: a JSON file of keys stored as SHA-256 hashes (the key itself is shown once, when made), each
with a role (read < write < admin) and the collections it is granted ('*' = all)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

ROLES = ("read", "write", "admin")  # read: embed, rerank, search; write: + add/upsert/delete documents; admin: + create/drop collections
KEY_PREFIX = "ek-"


def hash_key(key: str) -> str:
    """The stored form of a key (keys are 192 random bits, so a plain SHA-256 is enough)."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass
class KeyRecord:
    """One key as stored: no secret, only its hash."""
    id: str
    hash: str
    role: str = "read"
    collections: list[str] = field(default_factory=lambda: ["*"])
    name: str = ""
    created: str = ""

    def can(self, role: str) -> bool:
        """True when this key's role is at least `role`."""
        return ROLES.index(self.role) >= ROLES.index(role)

    def sees(self, collection: str) -> bool:
        """True when this key is granted `collection`."""
        return "*" in self.collections or collection in self.collections


class KeyStore:
    """The API-key file, re-read when it changes on disk (so `encoderkit keys revoke` takes effect live)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._by_hash: dict[str, KeyRecord] = {}
        self._records: list[KeyRecord] = []
        self._mtime: float | None = None
        self._bad_mtime: float | None = None  # the version of the file that failed to load (logged once)
        self._checked = 0.0
        if self.path.exists():
            self._load()

    # ------------------------------------------------------------------ file
    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{self.path}: not valid JSON ({exc}); recreate it with `encoderkit keys add`") from exc
        keys = data.get("keys", []) if isinstance(data, dict) else None
        if not isinstance(keys, list):
            raise ValueError(f"{self.path}: expected {{\"keys\": [...]}}; recreate it with `encoderkit keys add`")
        records = []
        for i, r in enumerate(keys):
            try:
                rec = KeyRecord(**{k: r[k] for k in ("id", "hash", "role", "collections", "name", "created") if k in r})
            except (TypeError, AttributeError):
                raise ValueError(f"{self.path}: key {i} is not a record with an id and a hash; recreate it with "
                                 "`encoderkit keys add`") from None
            if rec.role not in ROLES:
                raise ValueError(f"{self.path}: key {i} ({rec.id}) has unknown role {rec.role!r}; use one of {ROLES}")
            if not isinstance(rec.collections, list) or not all(isinstance(c, str) for c in rec.collections):
                raise ValueError(f"{self.path}: key {i} ({rec.id}) collections must be a list of names")
            records.append(rec)
        self._records = records
        self._by_hash = {r.hash: r for r in records}
        self._mtime = self.path.stat().st_mtime

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps({"version": 1, "keys": [asdict(r) for r in self._records]}, indent=2) + "\n",
                       encoding="utf-8")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        self._mtime = self.path.stat().st_mtime

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < 1.0:
            return
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._records, self._by_hash = [], {}
            return
        if mtime != self._mtime and mtime != self._bad_mtime:
            try:
                self._load()
            except (ValueError, OSError) as exc:  # keep serving with the last good keys; say so once per bad version
                self._bad_mtime = mtime
                log.error("API key file changed but cannot be read: %s; still using the %d keys loaded before",
                          exc, len(self._records))
                return
            self._bad_mtime = None
            log.info("reloaded API keys from %s (%d keys)", self.path, len(self._records))

    # ------------------------------------------------------------------ use
    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[KeyRecord]:
        with self._lock:
            return list(self._records)

    def verify(self, key: str) -> KeyRecord | None:
        """The record of `key`, or None when it is not a valid key."""
        with self._lock:
            self._refresh()
            return self._by_hash.get(hash_key(key))

    # ------------------------------------------------------------------ manage
    def add(self, role: str = "read", collections: list[str] | None = None, name: str = "") -> tuple[str, KeyRecord]:
        """Make a new key; returns (the key, shown only now, its stored record)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
        if collections is not None and not [c for c in collections if c]:
            raise ValueError("no collections to grant; name some, or give '*' for all")
        with self._lock:
            key_id = secrets.token_hex(4)
            key = f"{KEY_PREFIX}{key_id}-{secrets.token_urlsafe(24)}"
            rec = KeyRecord(id=key_id, hash=hash_key(key), role=role, collections=list(collections or ["*"]),
                            name=name, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            self._records.append(rec)
            self._by_hash[rec.hash] = rec
            self._save()
        return key, rec

    def revoke(self, key_id: str) -> bool:
        """Remove the key with this id; False when there is none."""
        with self._lock:
            keep = [r for r in self._records if r.id != key_id]
            if len(keep) == len(self._records):
                return False
            self._records = keep
            self._by_hash = {r.hash: r for r in keep}
            self._save()
        return True


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
