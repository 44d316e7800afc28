"""Reading inputs (text lines, JSONL, CSV) and writing vectors (.npy, .jsonl) for the CLI and scripts.
Writes go to a temp file renamed into place, so an output is never left half-written."""
from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Records:
    texts: list[str]
    ids: list[Any]  # ids from the input (JSONL "id"/"_id", CSV "id" column) or line numbers


def _open_text(path: str):
    if path == "-":
        return sys.stdin
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    return p.open(encoding="utf-8", newline="")


def render_template(template: str, fields: dict, where: str) -> str:
    """`template` ("{title} {text}") filled from a record's fields; a missing field is a ValueError naming
    `where` (file:line) and the fields there are. A missing or empty value leaves no stray spaces."""
    import string

    names = [n for _, n, _, _ in string.Formatter().parse(template) if n]
    missing = [n for n in names if n not in fields]
    if missing:
        raise ValueError(f"{where}: the template {template!r} names field {missing[0]!r}, which this record does not "
                         f"have (fields: {', '.join(map(str, fields)) or 'none'})")
    values = {n: "" if fields[n] is None else str(fields[n]) for n in names}
    return template.format_map(values).strip() if values else template


def title_template(title_field: str, text_field: str = "text") -> str:
    """The template `--title-field F` stands for: the title, a space, the text."""
    return "{" + title_field + "} {" + text_field + "}"


def read_inputs(path: str, field: str = "text", column: str = "text", fmt: str | None = None,
                template: str | None = None) -> Records:
    """Texts from a .txt file (one per non-blank line), .jsonl (`field` of each object), .csv (`column`),
    or '-' for stdin lines. Errors name the file and line. `template` ("{title} {text}") builds each text from
    the record's fields instead (in a .txt file the line is {text})."""
    fmt = fmt or {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}.get(Path(path).suffix.lower(), "txt")
    texts, ids = [], []
    try:
        with _open_text(path) as fh:
            if fmt == "jsonl":
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError as exc:
                        raise ValueError(f"{path}:{n}: malformed JSON line: {exc}") from None
                    if not isinstance(obj, dict) or field not in obj:
                        raise ValueError(f"{path}:{n}: no field {field!r} in this record (choose one with --field)")
                    if not isinstance(obj[field], str):
                        raise ValueError(f"{path}:{n}: field {field!r} is a {type(obj[field]).__name__}, expected text")
                    texts.append(render_template(template, {"text": obj[field], **obj}, f"{path}:{n}")
                                 if template else obj[field])
                    ids.append(obj.get("id", obj.get("_id", n)))
            elif fmt in ("csv", "tsv"):
                reader = csv.DictReader(fh, delimiter="\t" if fmt == "tsv" else ",")
                if reader.fieldnames is None or column not in reader.fieldnames:
                    raise ValueError(f"{path}: no column {column!r} (columns: {reader.fieldnames}); choose one with --column")
                for n, row in enumerate(reader, 2):
                    text = row[column] or ""
                    texts.append(render_template(template, {"text": text, **row}, f"{path}:{n}") if template else text)
                    ids.append(row.get("id", n))
            else:
                for n, line in enumerate(fh, 1):
                    line = line.rstrip("\r\n")
                    if line.strip():
                        texts.append(render_template(template, {"text": line}, f"{path}:{n}") if template else line)
                        ids.append(n)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return Records(texts, ids)


def _atomic_target(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def write_vectors(path: str, vectors: np.ndarray, records: Records | None = None) -> Path:
    """Write vectors to .npy or .jsonl ({"id", "embedding"} per line), atomically."""
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in (".npy", ".jsonl"):
        raise ValueError(f"output must end in .npy or .jsonl, got {out.name!r}")
    tmp = _atomic_target(out)
    try:
        if suffix == ".npy":
            with tmp.open("wb") as fh:
                np.save(fh, vectors)
        else:
            with tmp.open("w", encoding="utf-8") as fh:
                for i, v in enumerate(vectors):
                    rid = records.ids[i] if records else i
                    fh.write(json.dumps({"id": rid, "embedding": v.tolist()}) + "\n")
        tmp.replace(out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
