"""Metadata filters (`where`) in the Mongo-like dialect of vector stores, compiled to a SQL condition on
the JSON metadata column: {"year": {"$gte": 2020}, "$or": [{"lang": "en"}, {"lang": {"$in": ["de", "fr"]}}]}.
Two dialects: SQLite (`json_extract`, `compile_where`) and PostgreSQL JSONB (`compile_where_pg`); both parse and
reject bad filters with the same messages, and agree with `matches` (the Python reference)."""
from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any, Callable

from encoderkit.store.validate import INT_MAX, INT_MIN

MAX_DEPTH = 16  # nested $and / $or levels: SQLite's parser overflows its stack near 30
MAX_CONDITIONS = 256  # field comparisons in one filter: SQLite's expression trees are at most 1000 deep
COMPARISONS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
LISTS = ("$in", "$nin")
LOGICAL = ("$and", "$or")
OPERATORS = tuple(COMPARISONS) + LISTS + LOGICAL
_FIELD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_][A-Za-z0-9_\-]*)*")


def _scalar(value: Any, where: str) -> Any:
    if isinstance(value, bool):
        return int(value)  # json_extract gives 1/0 for JSON true/false
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"where: {where} compares with {value}: NaN and Infinity are not JSON numbers (no stored "
                         "value is one); use a finite number")
    if isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
        raise ValueError(f"where: {where} compares with an integer of {len(str(abs(value)))} digits, outside the "
                         "signed 64-bit range of stored integers; use a float or a string")
    if value is None or isinstance(value, (int, float, str)):
        return value
    raise ValueError(f"where: {where} compares with a {type(value).__name__} ({value!r:.60}); "
                     "use a string, number, boolean or null")


def _path(field: str) -> str:
    if not isinstance(field, str) or not _FIELD.fullmatch(field):
        raise ValueError(f"where: bad field name {field!r}; use letters, digits, _ and - (dots for nested keys), "
                         f"or one of the operators {', '.join(LOGICAL)}")
    return "$." + ".".join(f'"{part}"' for part in field.split("."))


def _field_condition(field: str, cond: Any, column: str, params: list) -> str:
    path = _path(field)
    expr = f"json_extract({column}, ?)"
    if not isinstance(cond, dict):
        cond = {"$eq": cond}
    if not cond:
        raise ValueError(f"where: empty condition for field {field!r}")
    parts = []
    for op, value in cond.items():
        if op in COMPARISONS:
            v = _scalar(value, f"{field} {op}")
            if v is None:
                if op not in ("$eq", "$ne"):
                    raise ValueError(f"where: {field} {op} null is not meaningful; use $eq or $ne with null")
                params.append(path)
                parts.append(f"{expr} IS {'NOT ' if op == '$ne' else ''}NULL")
                continue
            params.extend([path, v])
            if op == "$ne":  # a document without the field also differs from the value
                params.append(path)
                parts.append(f"({expr} != ? OR {expr} IS NULL)")
            else:
                parts.append(f"{expr} {COMPARISONS[op]} ?")
        elif op in LISTS:
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"where: {field} {op} needs a list of values, got {type(value).__name__}")
            if not value:
                parts.append("0" if op == "$in" else "1")
                continue
            vals = [_scalar(v, f"{field} {op}") for v in value]
            params.append(path)
            params.extend(vals)
            marks = ", ".join("?" for _ in vals)
            if op == "$in":
                parts.append(f"{expr} IN ({marks})")
            else:
                params.append(path)
                parts.append(f"({expr} NOT IN ({marks}) OR {expr} IS NULL)")
        else:
            raise ValueError(f"where: unknown operator {op!r} on field {field!r}; "
                             f"supported: {', '.join(COMPARISONS)}, {', '.join(LISTS)}")
    return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"


def _check_size(where: Any) -> Any:
    """`where` unless it nests $and / $or deeper than MAX_DEPTH or holds more than MAX_CONDITIONS comparisons
    (a database would fail on its SQL); iterative, so any depth is measured without recursing."""
    stack, conditions = [(where, 0)], 0
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"where: $and / $or nested more than {MAX_DEPTH} levels deep; flatten the filter")
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            if key in LOGICAL and isinstance(value, (list, tuple)):
                stack.extend((v, depth + 1) for v in value)
            else:
                conditions += len(value) if isinstance(value, dict) and value else 1
        if conditions > MAX_CONDITIONS:
            raise ValueError(f"where: more than {MAX_CONDITIONS} comparisons in one filter; use $in with a list "
                             "of values, or split the request")
    return where


def _compile(where: Any, column: str, params: list, field: Callable = _field_condition, true: str = "1") -> str:
    if not isinstance(where, dict):
        raise ValueError(f"where must be a dict like {{\"year\": {{\"$gte\": 2020}}}}, got {type(where).__name__}")
    parts = []
    for key, value in where.items():
        if key in LOGICAL:
            if not isinstance(value, (list, tuple)) or not value:
                raise ValueError(f"where: {key} needs a non-empty list of conditions")
            subs = [_compile(v, column, params, field, true) for v in value]
            parts.append("(" + (" AND " if key == "$and" else " OR ").join(subs) + ")")
        elif isinstance(key, str) and key.startswith("$"):
            raise ValueError(f"where: unknown operator {key!r}; at the top level use a field name or "
                             f"{', '.join(LOGICAL)}")
        else:
            parts.append(field(key, value, column, params))
    if not parts:
        return true
    return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"


def compile_where(where: dict | str | None, column: str = "metadata") -> tuple[str, list]:
    """(SQL condition, parameters) for a `where` filter (a dict or its JSON text); ("1", []) when None."""
    if where is None:
        return "1", []
    params: list = []
    sql = _compile(_check_size(_parse(where)), column, params)
    return sql, params


def _parse(where: dict | str) -> Any:
    if isinstance(where, str):
        try:
            return json.loads(where)
        except json.JSONDecodeError as exc:
            raise ValueError(f"where is not valid JSON ({exc}); example: '{{\"year\": {{\"$gte\": 2020}}}}'") from None
    return where


# ---------------------------------------------------------------------- PostgreSQL (JSONB)
# The same semantics as `matches`: booleans compare as 1/0; a number never equals a string; in an ordering
# comparison between a number and a string, the string is the greater (SQLite's order); text compares by
# code point (COLLATE "C", as SQLite's BINARY); a missing field or JSON null fails every comparison except
# $eq null / $ne / $nin. Field paths are validated by _FIELD (letters, digits, _ and -), so they are inlined.

def _pg_value(v: Any) -> Any:
    if isinstance(v, str) and "\x00" in v:  # the driver would fail the whole query
        raise ValueError(f"where: the value {v!r} holds a NUL character (\\x00), which PostgreSQL text cannot "
                         "hold; no stored value contains one")
    return Decimal(repr(v)) if isinstance(v, float) else v  # exact decimal, compared as numeric


def _pg_field_condition(field: str, cond: Any, column: str, params: list) -> str:
    _path(field)  # validates the name (same message as SQLite)
    e = f"({column} #> '{{{','.join(field.split('.'))}}}')"
    kind = f"jsonb_typeof({e})"
    num = f"(CASE {kind} WHEN 'number' THEN {e}::numeric WHEN 'boolean' THEN {e}::boolean::int::numeric END)"
    txt = f"(CASE {kind} WHEN 'string' THEN {e} #>> '{{}}' END)"

    def eq(v: Any) -> str:
        if v is None:
            return f"({e} IS NULL OR {kind} = 'null')"
        params.append(_pg_value(v))
        return f"COALESCE({txt if isinstance(v, str) else num} = %s, FALSE)"

    if not isinstance(cond, dict):
        cond = {"$eq": cond}
    if not cond:
        raise ValueError(f"where: empty condition for field {field!r}")
    parts = []
    for op, value in cond.items():
        if op in COMPARISONS:
            v = _scalar(value, f"{field} {op}")
            if op in ("$eq", "$ne"):
                parts.append(eq(v) if op == "$eq" else f"NOT {eq(v)}")
                continue
            if v is None:
                raise ValueError(f"where: {field} {op} null is not meaningful; use $eq or $ne with null")
            params.append(_pg_value(v))
            greater = op in ("$gt", "$gte")
            if isinstance(v, str):  # numbers (and booleans) sort before strings
                also = "" if greater else f" OR {kind} IN ('number', 'boolean')"
                parts.append(f"COALESCE({txt} COLLATE \"C\" {COMPARISONS[op]} %s{also}, FALSE)")
            else:
                also = f" OR {kind} = 'string'" if greater else ""
                parts.append(f"COALESCE({num} {COMPARISONS[op]} %s{also}, FALSE)")
        elif op in LISTS:
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"where: {field} {op} needs a list of values, got {type(value).__name__}")
            vals = [_scalar(v, f"{field} {op}") for v in value]
            anyof = "(" + " OR ".join(eq(v) for v in vals) + ")" if vals else "FALSE"
            parts.append(anyof if op == "$in" else f"NOT {anyof}")
        else:
            raise ValueError(f"where: unknown operator {op!r} on field {field!r}; "
                             f"supported: {', '.join(COMPARISONS)}, {', '.join(LISTS)}")
    return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"


def compile_where_pg(where: dict | str | None, column: str = "metadata") -> tuple[str, list]:
    """(SQL condition with %s placeholders, parameters) on a JSONB column, for psycopg; ("TRUE", []) when None."""
    if where is None:
        return "TRUE", []
    params: list = []
    sql = _compile(_check_size(_parse(where)), column, params, _pg_field_condition, "TRUE")
    return sql, params


def matches(where: dict | None, metadata: dict) -> bool:
    """Python evaluation of the same filter (used by tests as an independent reference)."""
    if where is None:
        return True
    for key, value in where.items():
        if key == "$and":
            if not all(matches(w, metadata) for w in value):
                return False
        elif key == "$or":
            if not any(matches(w, metadata) for w in value):
                return False
        else:
            cur: Any = metadata
            for part in key.split("."):
                cur = cur.get(part) if isinstance(cur, dict) else None
            cond = value if isinstance(value, dict) else {"$eq": value}
            for op, v in cond.items():
                if not _test(op, cur, v):
                    return False
    return True


def _test(op: str, x: Any, v: Any) -> bool:
    if isinstance(x, bool):
        x = int(x)
    if isinstance(v, bool):
        v = int(v)
    if op == "$eq":
        return x == v
    if op == "$ne":
        return x != v
    if op in ("$in", "$nin"):
        vals = [int(t) if isinstance(t, bool) else t for t in v]
        return (x in vals) if op == "$in" else (x not in vals)
    if x is None or isinstance(x, (dict, list)):
        return False
    if isinstance(x, str) != isinstance(v, str):  # SQLite orders numbers before text
        return {"$gt": isinstance(x, str), "$gte": isinstance(x, str),
                "$lt": not isinstance(x, str), "$lte": not isinstance(x, str)}[op]
    return {"$gt": x > v, "$gte": x >= v, "$lt": x < v, "$lte": x <= v}[op]
