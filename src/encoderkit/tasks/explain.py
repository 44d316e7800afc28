"""Why a search found nothing, in one sentence a user can act on: the collection is empty (and the command that
fills it), a filter names a field no document has (and the fields there are), a filter compares a field with a
value of another type, no document passes the filters, or keyword mode found none of the words. Run only after
an empty result, so it costs nothing on the common path."""
from __future__ import annotations

import json
from typing import Any, Iterator

RANGE_OPS = ("$gt", "$gte", "$lt", "$lte")
SAMPLE = 2000  # documents whose metadata are read to learn the fields


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    return "list" if isinstance(v, list) else "object"


def field_kinds(coll: Any, sample: int = SAMPLE) -> dict[str, set[str]]:
    """Metadata field -> kinds of value seen (number, string, boolean, list, object, null), from the first
    `sample` documents; nested keys also as 'a.b' (as `where` spells them)."""
    out: dict[str, set[str]] = {}

    def walk(d: dict, prefix: str = "") -> None:
        for k, v in d.items():
            out.setdefault(prefix + k, set()).add(_kind(v))
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")

    rids = [int(r) for r in coll.store.filter_rids(None)[:sample]]
    for row in coll.store.rows_by_rids(rids).values():
        meta = row[2]
        walk(json.loads(meta) if isinstance(meta, str) else (meta or {}))
    return out


def conditions(where: Any) -> Iterator[tuple[str, str, Any]]:
    """(field, operator, value) of every condition in a `where` filter ($and / $or walked)."""
    if not isinstance(where, dict):
        return
    for key, cond in where.items():
        if key in ("$and", "$or"):
            for part in cond if isinstance(cond, list) else []:
                yield from conditions(part)
        elif isinstance(cond, dict) and cond and all(str(k).startswith("$") for k in cond):
            for op, value in cond.items():
                yield key, op, value
        else:
            yield key, "$eq", cond


def _plural(kind: str) -> str:
    return {"number": "numbers", "string": "strings", "boolean": "true/false values", "list": "lists",
            "object": "objects", "null": "nulls"}.get(kind, kind)


def _type_problem(field: str, op: str, value: Any, kinds: set[str]) -> str | None:
    values = value if op in ("$in", "$nin") and isinstance(value, list) else [value]
    given = {_kind(v) for v in values}
    held = kinds - {"null"}
    if not held or given & held or (op in ("$ne", "$nin")):
        return None
    shown = json.dumps(values[0] if len(values) == 1 else value, ensure_ascii=False)
    hint = ""
    if held == {"number"} and given == {"string"}:
        hint = " (write the number without quotes)"
    elif held == {"string"} and given & {"number", "boolean"}:
        hint = " (put the value in quotes)"
    return (f"the filter compares field {field!r} with {shown}, a {sorted(given)[0]}, but that field holds "
            f"{' and '.join(_plural(k) for k in sorted(held))}{hint}")


def explain_empty(coll: Any, *, where: Any = None, mode: str | None = None, add_hint: str = "") -> str | None:
    """A sentence saying why a search of `coll` returned nothing, or None when there is nothing to say."""
    if isinstance(where, str):
        try:
            where = json.loads(where)
        except ValueError:
            return None
    if coll.count() == 0:
        return "the collection is empty: add documents" + (f" with {add_hint}" if add_hint else "")
    if where:
        kinds = field_kinds(coll)
        for field, op, value in conditions(where):
            if field not in kinds:
                known = ", ".join(sorted(kinds)) or "none"
                return f"no document has the metadata field {field!r}; the fields are: {known}"
            problem = _type_problem(field, op, value, kinds[field])
            if problem:
                return problem
        if coll.count(where) == 0:
            return f"no document matches the filter {json.dumps(where, ensure_ascii=False)}"
    if mode == "keyword":
        return "no document contains the query's words (keyword mode matches whole words); try vector or hybrid mode"
    return None
