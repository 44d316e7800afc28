"""Ingest files into a collection: .txt / .md (one document per file, or one per non-blank line with
lines=True), .jsonl (one per line), .csv (one per row), and directories of them. `template` ("{title} {text}")
sets the text stored and embedded from a record's fields. Long documents are split into overlapping chunks of
whole words and sentences sized in the model's tokens (store/chunking.py); exact duplicates
are skipped by content hash; documents are committed in batches, so an interrupted run can simply be re-run."""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from encoderkit.io import render_template
from encoderkit.store.chunking import chunk_text
from encoderkit.store.collection import content_hash
from encoderkit.store.fresh_write import write_fresh
from encoderkit.store.validate import INT_MAX, INT_MIN, check_value, surrogate_at

log = logging.getLogger(__name__)

SUFFIXES = (".txt", ".md", ".jsonl", ".csv")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


@dataclass
class IngestReport:
    """What an ingest run did."""
    files: int = 0
    added: int = 0            # documents / chunks written (new or changed)
    unchanged: int = 0        # same id and same content already present (a re-run)
    duplicates: int = 0       # same content as another document: skipped
    chunked: int = 0          # source documents split into several chunks
    batches: int = 0
    errors: list = field(default_factory=list)  # [(path, message)] for files reported and skipped

    def to_dict(self) -> dict:
        return {"files": self.files, "added": self.added, "unchanged": self.unchanged,
                "duplicates": self.duplicates, "chunked": self.chunked, "batches": self.batches,
                "errors": [{"path": p, "error": m} for p, m in self.errors]}


@dataclass
class RawDoc:
    id: str
    text: str
    metadata: dict
    late: tuple[str, tuple[int, int]] | None = None  # late chunking: (the whole document's text, this chunk's span)


# ---------------------------------------------------------------------- reading files
def iter_files(paths: Sequence[str | os.PathLike]) -> Iterator[tuple[Path, str]]:
    """(file, id prefix) for each supported file under the given files/directories, in sorted order."""
    for p in paths:
        p = Path(p).expanduser()
        if p.is_dir():
            for f in sorted(q for q in p.rglob("*") if (q.is_file() or q.is_symlink()) and q.suffix.lower() in SUFFIXES):
                yield f, (Path(p.name) / f.relative_to(p)).as_posix()
        elif p.exists() or p.is_symlink():
            yield p, p.name
        else:
            raise FileNotFoundError(f"{p} does not exist")


def _convert(value: str) -> Any:
    """A CSV cell as a number when it is one (integers beyond 64 bits, like long codes, stay strings)."""
    if not _NUMBER.fullmatch(value):
        return value
    if "." in value:
        return float(value)
    return int(value) if INT_MIN <= int(value) <= INT_MAX else value


def _csv_rows(reader: csv.DictReader, path) -> Iterator[dict]:
    """reader's rows, a csv.Error raised as a ValueError naming the file and line."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise ValueError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
        yield row


def read_file(path: Path, prefix: str, text_field: str = "text", id_field: str = "id", *, lines: bool = False,
              template: str | None = None) -> list[RawDoc]:
    """Documents in one file. Raises UnicodeDecodeError / OSError for unreadable files (the caller reports and
    skips them) and ValueError naming file and line for malformed content. lines: a .txt/.md file holds one
    document per non-blank line (ids FILE:LINE); template: the text is built from the record's fields."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {suffix or '(none)'}; supported: {', '.join(SUFFIXES)}")
    raw = path.read_bytes().decode("utf-8")  # strict: a non-UTF-8 file is reported, not half-read
    source = str(path)
    if suffix in (".txt", ".md"):
        if lines:
            return [RawDoc(f"{prefix}:{n}", _fill(template, {"text": line}, f"{path}:{n}"), {"source": source})
                    for n, line in enumerate(raw.splitlines(), start=1) if line.strip()]
        return [RawDoc(prefix, _fill(template, {"text": raw}, str(path)), {"source": source})] if raw.strip() else []
    docs = []
    if suffix == ".jsonl":
        for lineno, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: malformed JSON line ({exc.msg} at column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            text = obj.get(text_field)
            if not isinstance(text, str):
                raise ValueError(f"{path}:{lineno}: no string field {text_field!r} (fields: {', '.join(obj) or 'none'})")
            id_ = obj.get(id_field, obj.get("_id"))
            md = {k: v for k, v in obj.items() if k not in (text_field, id_field, "_id")}
            md["source"] = source
            if surrogate_at(text) is not None:  # JSON escapes can spell text that is not Unicode
                raise ValueError(f"{path}:{lineno}: field {text_field!r} holds a lone UTF-16 surrogate at character "
                                 f"{surrogate_at(text)}; fix the line")
            check_value(md, f"{path}:{lineno}")  # NaN, Infinity, integers beyond 64 bits: refused by line
            text = _fill(template, {"text": text, **obj}, f"{path}:{lineno}")
            docs.append(RawDoc(str(id_) if id_ is not None else f"{prefix}:{lineno}", text, md))
        return docs
    reader = csv.DictReader(io.StringIO(raw, newline=""))  # csv sees \r, \n and \r\n line ends itself
    try:
        fieldnames = reader.fieldnames
    except csv.Error as e:
        raise ValueError(f"{path}:1: not valid CSV ({e})") from None
    if not fieldnames or text_field not in fieldnames:
        raise ValueError(f"{path}:1: CSV header has no {text_field!r} column (columns: {fieldnames})")
    for row in _csv_rows(reader, path):
        lineno = reader.line_num
        if None in row:
            raise ValueError(f"{path}:{lineno}: row has more fields than the header")
        if None in row.values():  # DictReader pads a short row with None: a missing field, not an empty one
            raise ValueError(f"{path}:{lineno}: row has {sum(v is not None for v in row.values())} fields, the header "
                             f"has {len(reader.fieldnames)}; fix the line (quote a text holding commas)")
        id_ = row.get(id_field)
        md = {k: _convert(v) for k, v in row.items() if k not in (text_field, id_field) and v is not None}
        md["source"] = source
        text = _fill(template, {"text": row[text_field] or "", **row}, f"{path}:{lineno}")
        docs.append(RawDoc(id_ or f"{prefix}:{lineno}", text, md))
    return [d for d in docs if d.text.strip()]


def _fill(template: str | None, fields: dict, where: str) -> str:
    return fields["text"] if not template else render_template(template, fields, where)


def count_documents(path: Path, lines: bool = False) -> int:
    """About how many documents a file holds (non-blank lines of a .jsonl, rows of a .csv), read cheaply so the
    progress display can show a total and an ETA before anything is embedded; 0 for unreadable files."""
    try:
        raw = path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return 0
    suffix = path.suffix.lower()
    if suffix == ".jsonl" or (lines and suffix in (".txt", ".md")):
        return sum(1 for line in raw.splitlines() if line.strip())
    if suffix == ".csv":
        return max(0, sum(1 for _ in csv.reader(io.StringIO(raw))) - 1)
    return 1 if raw.strip() else 0


# ---------------------------------------------------------------------- chunking
def chunk_spans(text: str, tokenizer: Any, size: int, overlap: int) -> list[tuple[int, int]]:
    """Character spans of chunk_text's chunks (each chunk is a slice of the text, and they start in order)."""
    spans, at = [], 0
    for chunk in chunk_text(text, tokenizer, size, overlap):
        a = text.find(chunk, at)
        spans.append((a, a + len(chunk)))
        at = a + 1
    return spans


def _untruncated(tokenizer: Any) -> Any:
    if tokenizer is None:
        return None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()
    return tok


# ---------------------------------------------------------------------- the run
def ingest(collection: Any, paths: str | os.PathLike | Sequence[str | os.PathLike], *, chunk_tokens: int | None = None,
           overlap: int = 32, batch_size: int = 256, text_field: str = "text", id_field: str = "id",
           lines: bool = False, template: str | None = None, progress: bool | None = None,
           late_chunking: bool = False,
           on_commit: Callable[[IngestReport, list[str]], None] | None = None) -> IngestReport:
    """Add files/directories to `collection`. chunk_tokens: window size (default: the model's max_length - 2;
    0 = never split). lines: .txt/.md files hold one document per non-blank line. template: the text stored and
    embedded, from the record's fields ("{title} {text}"). Unreadable or non-UTF-8 files are reported in `errors`
    and skipped; a malformed JSONL or CSV line raises ValueError naming file and line (batches already committed
    stay). progress: one bar over all documents of all files, with rate and ETA (None: when stderr is a TTY).
    late_chunking: the chunks of a long document are pooled from passes over the whole document (each pass the
    model's window: chunks in context), not encoded alone; chunks default to min(128, window / 2) tokens then."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    files = list(iter_files(paths))
    report = IngestReport(files=len(files))
    if late_chunking:
        _check_late(collection, chunk_tokens)
    tokenizer, size = None, chunk_tokens
    if chunk_tokens != 0:
        enc = collection.encoder
        tokenizer = _untruncated(getattr(enc, "tokenizer", None))
        if size is None:
            window = int(getattr(enc, "max_length", 256)) - 2
            size = max(16, min(128, window // 2) if late_chunking else window)
    seen: set[str] = set()
    pending: list[RawDoc] = []
    weights: list[float] = []  # each source document counts 1 on the progress bar, shared by its chunks
    bar = _Progress(files, lines, progress)

    def commit() -> None:
        if not pending:
            return
        ids = [d.id for d in pending]
        have = collection.store.hashes_by_ids(ids)
        hashes = [content_hash(d.text) for d in pending]
        fresh = [(d, h, w) for d, h, w in zip(pending, hashes, weights) if have.get(d.id) != h]
        report.unchanged += len(pending) - len(fresh)
        bar.advance(sum(weights) - sum(w for _, _, w in fresh))
        taken = collection.store.existing_hashes([h for _, h, _ in fresh])
        todo, todo_w = [], []
        for d, h, w in fresh:
            if h in taken and d.id not in have:
                report.duplicates += 1
                bar.advance(w)
            else:
                todo.append(d)
                todo_w.append(w)
        if todo:
            texts = [d.text for d in todo]
            vectors = None
            if hasattr(collection, "embed"):  # here, not in upsert: no nested bar; slices move ours within a batch
                vectors = _embed(collection, todo, todo_w, bar)
            if vectors is not None:  # checked again under the write lock: another process may have added them
                kept, same, dup = write_fresh(collection, [d.id for d in todo], texts, [d.metadata for d in todo],
                                              vectors)
                report.unchanged, report.duplicates = report.unchanged + same, report.duplicates + dup
                todo = [todo[n] for n in kept]
            else:
                collection.upsert(texts, ids=[d.id for d in todo], metadatas=[d.metadata for d in todo])
                bar.advance(sum(todo_w))
        report.added += len(todo)
        report.batches += 1
        pending.clear()
        weights.clear()
        bar.postfix(report)
        if on_commit is not None:
            on_commit(report, [d.id for d in todo])

    try:
        for path, prefix in files:
            expected = bar.expected.get(path, 0)
            try:
                docs = read_file(path, prefix, text_field, id_field, lines=lines, template=template)
            except (UnicodeDecodeError, OSError) as exc:
                why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"unreadable ({exc.strerror or exc})"
                log.warning("skipping %s: %s", path, why)
                report.errors.append((str(path), why))
                bar.advance(expected)
                continue
            bar.recount(expected, len(docs))  # the quick count and the parsed file may differ (blank texts)
            for doc in docs:
                parts = chunk_spans(doc.text, tokenizer, size, min(overlap, size - 1)) if size else [(0, len(doc.text))]
                if len(parts) > 1:
                    report.chunked += 1
                for i, (a, b) in enumerate(parts):
                    d = doc if len(parts) == 1 else RawDoc(f"{doc.id}#{i}", doc.text[a:b],
                                                           {**doc.metadata, "parent": doc.id, "chunk": i,
                                                            "chunks": len(parts)},
                                                           (doc.text, (a, b)) if late_chunking else None)
                    if not d.text.strip():
                        bar.advance(1 / len(parts))
                        continue
                    key = content_hash(d.text)
                    if key in seen:  # duplicate within this run
                        report.duplicates += 1
                        bar.advance(1 / len(parts))
                        continue
                    seen.add(key)
                    pending.append(d)
                    weights.append(1 / len(parts))
                    if len(pending) >= batch_size:
                        commit()
        commit()
    finally:
        bar.close()
        collection.flush()
    return report


def _check_late(collection: Any, chunk_tokens: int | None) -> None:
    """Late chunking needs chunks and a collection of dense vectors from a text model with a tokenizer."""
    if chunk_tokens == 0:
        raise ValueError("late chunking pools the chunks of long documents; it cannot go with chunk_tokens=0 "
                         "(no split)")
    kinds = getattr(collection, "kinds", ("dense",))
    if "dense" not in kinds:
        raise ValueError(f"late chunking gives each chunk a dense vector; this collection holds {', '.join(kinds)} "
                         "vectors only")
    enc = collection.encoder
    if getattr(enc, "tokenizer", None) is None:
        raise ValueError(f"late chunking needs a text model with a tokenizer; {collection.model!r} has none")
    if chunk_tokens and chunk_tokens > enc.max_length - 4:  # a pass holds the chunk, special tokens and a margin
        raise ValueError(f"chunks of {chunk_tokens} tokens do not fit one {enc.max_length}-token pass of "
                         f"{collection.model!r}; late chunking needs chunks smaller than the model's window")


def _embed(collection: Any, docs: list[RawDoc], weights: list[float], bar: "_Progress") -> Any:
    """Dense vectors of a batch: late-chunked chunks pooled from their document's passes (each document read once),
    the others encoded alone, the bar advancing as slices finish."""
    import numpy as np

    from encoderkit.late_chunking import encode_long

    out = np.zeros((len(docs), collection.dim), np.float32)
    parents: dict[str, list[int]] = {}
    for i, d in enumerate(docs):
        if d.late is not None:
            parents.setdefault(d.metadata["parent"], []).append(i)
    for idx in parents.values():
        text = docs[idx[0]].late[0]
        out[idx] = encode_long(collection.encoder, text, [docs[i].late[1] for i in idx],
                               normalize=collection.metric == "cosine")
        bar.advance(sum(weights[i] for i in idx))
    rest = [i for i, d in enumerate(docs) if d.late is None]
    step = 32 if bar.on else max(1, len(rest))
    for s in range(0, len(rest), step):
        idx = rest[s:s + step]
        out[idx] = collection.embed([docs[i].text for i in idx], progress=False)
        bar.advance(sum(weights[i] for i in idx))
    return out


class _Progress:
    """One tqdm bar for a whole ingest: documents of all files (counted quickly up front), rate and ETA;
    chunks advance it by their share of a document. A no-op when off."""

    def __init__(self, files: list[tuple[Path, str]], lines: bool, show: bool | None):
        self.on = bool(show if show is not None else _isatty())
        self.bar, self.done, self.expected = None, 0.0, {}
        if not self.on:
            return
        from tqdm.auto import tqdm

        self.expected = {p: count_documents(p, lines) for p, _ in files}
        total = sum(self.expected.values())
        self.bar = tqdm(total=total, desc="ingest", unit="doc", dynamic_ncols=True, smoothing=0.1)
        self.bar.set_postfix_str(f"{len(files)} file{'s' if len(files) != 1 else ''}")

    def advance(self, n: float) -> None:
        if self.bar is None or n == 0:
            return
        self.done = max(0.0, min(float(self.bar.total), self.done + n))
        step = int(round(self.done)) - self.bar.n
        if step:
            self.bar.update(step)

    def recount(self, expected: int, actual: int) -> None:
        """A file held `actual` documents where the quick count said `expected`: correct the total."""
        if self.bar is not None and actual != expected:
            self.bar.total = max(0, self.bar.total + actual - expected)
            self.bar.refresh()

    def postfix(self, report: IngestReport) -> None:
        if self.bar is not None:
            self.bar.set_postfix(added=report.added, dup=report.duplicates, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _isatty() -> bool:
    import sys

    return sys.stderr.isatty()


__all__ = ["ingest", "IngestReport", "chunk_spans", "chunk_text", "read_file", "iter_files", "SUFFIXES"]
