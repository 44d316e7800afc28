"""Checks on what a collection stores, shared by both backends (SQLite + FAISS and PostgreSQL + pgvector):
collection names, and document texts, ids and metadata. A value that one database accepts but another query
would choke on later (NaN, a 400-digit integer, a lone UTF-16 surrogate) is refused at ingest, naming the
document, so one bad document can never make a collection unusable."""
from __future__ import annotations

import json
import math
import re
from typing import Any

NAME_MAX = 128
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1  # what SQLite's json functions and PostgreSQL's jsonb compare exactly


class InvalidDocument(ValueError):
    """A document's text, id or metadata cannot be stored; the message names the document and the value."""


def check_collection_name(name: str) -> str:
    """`name` when it can name a collection (letters, digits, '_', '-', '.'; at most NAME_MAX), else ValueError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"bad collection name {name!r}: use letters, digits, '_', '-', '.', starting with a "
                         f"letter, digit or '_' (at most {NAME_MAX} characters)")
    if len(name) > NAME_MAX:
        raise ValueError(f"collection name is {len(name)} characters long; the limit is {NAME_MAX}: "
                         "pick a shorter name")
    return name


def surrogate_at(text: str) -> int | None:
    """Index of the first lone UTF-16 surrogate in `text` (not encodable as UTF-8), or None."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as exc:
        return exc.start


def _where(path: list) -> str:
    return "metadata" + "".join(f"[{p!r}]" for p in path)


def check_value(value: Any, doc: str) -> None:
    """Raise InvalidDocument unless `value` (metadata: nested dicts/lists) stores as standard JSON that every
    query can read back: string keys, finite numbers, integers within signed 64 bits, valid Unicode."""
    stack: list[tuple[Any, list]] = [(value, [])]
    while stack:  # iterative: a deeply nested value cannot exhaust the recursion limit
        v, path = stack.pop()
        if v is None or isinstance(v, bool):
            continue
        if isinstance(v, str):
            at = surrogate_at(v)
            if at is not None:
                raise InvalidDocument(f"document {doc}: {_where(path)} holds a lone UTF-16 surrogate at character "
                                      f"{at}, which is not valid Unicode; send valid UTF-8 text")
        elif isinstance(v, int):
            if not INT_MIN <= v <= INT_MAX:
                raise InvalidDocument(f"document {doc}: {_where(path)} is an integer with {len(str(abs(v)))} digits, "
                                      "outside the signed 64-bit range; store it as a string or a float")
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise InvalidDocument(f"document {doc}: {_where(path)} is {v}: NaN or Infinity is not valid JSON; "
                                      "store a finite number, null or a string")
        elif isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str):
                    raise InvalidDocument(f"document {doc}: {_where(path)} has the non-string key {k!r}; "
                                          "metadata keys must be strings")
                if surrogate_at(k) is not None:
                    raise InvalidDocument(f"document {doc}: {_where(path)} has a key with a lone UTF-16 "
                                          "surrogate; send valid UTF-8 text")
                stack.append((item, path + [k]))
        elif isinstance(v, (list, tuple)):
            stack.extend((item, path + [i]) for i, item in enumerate(v))
        else:
            raise InvalidDocument(f"document {doc}: {_where(path)} is of type {type(v).__name__}, not "
                                  "JSON-serializable; use strings, numbers, booleans, null, lists and objects")


def check_document(doc_id: str, text: str, metadata: dict) -> None:
    """Raise InvalidDocument (naming the document) unless its id, text and metadata can be stored."""
    label = repr(doc_id) if surrogate_at(doc_id) is None else ascii(doc_id)
    if surrogate_at(doc_id) is not None:
        raise InvalidDocument(f"document {label}: its id holds a lone UTF-16 surrogate; send valid UTF-8 text")
    at = surrogate_at(text)
    if at is not None:
        raise InvalidDocument(f"document {label}: its text holds a lone UTF-16 surrogate at character {at}, "
                              "which is not valid Unicode; send valid UTF-8 text")
    check_value(metadata, label)


def matches_everything(where: Any) -> bool:
    """True for a filter with no condition in it ({}, or $and / $or of only such filters): it selects every
    document, which a delete must not do by accident."""
    if isinstance(where, str):
        try:
            where = json.loads(where)
        except json.JSONDecodeError:
            return False  # not a filter at all: compile_where names the problem
    stack = [where]  # iterative: a filter nested thousands of levels deep is judged without recursing
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            return False
        for k, v in node.items():
            if k not in ("$and", "$or") or not isinstance(v, list) or not v:
                return False
            stack.extend(v)
    return True


def check_delete(ids: Any, where: Any, everything: bool, flag: str = "all=True") -> Any:
    """The `where` a delete may run with: ids, a filter with a condition, or everything alone ({}: all documents).
    ValueError for nothing to delete by, for an empty filter, and for everything mixed with a selection; `flag` is
    how the caller spells all=True (HTTP "all": true, CLI --all)."""
    if everything:
        if ids is not None or where is not None:
            raise ValueError(f"delete with {flag} empties the collection; give it alone, without ids or where")
        return {}
    if ids is None and where is None:
        raise ValueError(f"delete needs ids, a where filter, or {flag} to delete every document")
    if where is not None and matches_everything(where):
        try:
            shown = where if isinstance(where, str) else json.dumps(where)
        except RecursionError:  # nested too deep to print
            shown = "{$and/$or of {}}"
        raise ValueError(f"delete with the empty filter {shown[:120]} "
                         f"would delete every document; to empty the collection pass {flag}")
    return where
