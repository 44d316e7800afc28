"""Scored sentence pairs from any file: STS Benchmark rows, a TSV / CSV with a header, or JSONL objects.
Columns are found by name (sentence1, sentence2, score by default); the score may use any range, since the
STS metric (Spearman) only compares ranks."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class PairColumns:
    """Names of the two text columns and the gold-score column."""
    sentence1: str = "sentence1"
    sentence2: str = "sentence2"
    score: str = "score"

    def names(self) -> tuple[str, str, str]:
        return self.sentence1, self.sentence2, self.score


Pairs = tuple[list[str], list[str], np.ndarray]


def _number(value: object, where: str) -> float:
    """A gold score as a finite float, or a ValueError naming the line."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: score {value!r} is not a number")
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: score {value!r} is not a number") from None
    if not np.isfinite(x):
        raise ValueError(f"{where}: score {value!r} is not a finite number")
    return x


def _text(value: object, name: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: column {name!r} is empty or not text")
    return value


def _missing(cols: PairColumns, have: list[str], path: Path) -> str:
    """The error for columns absent from a file's header: what is there and which flags pick columns."""
    lost = [c for c in cols.names() if c not in have]
    return (f"{path}: no column {', '.join(repr(c) for c in lost)}; the file has {', '.join(map(repr, have)) or 'none'} "
            "(name them with --sentence1, --sentence2, --score)")


def is_sts_benchmark(first_line: str) -> bool:
    """True for an STS Benchmark row: genre, file, year, id, score, sentence1, sentence2 (tabs, no header; a
    header row has no year)."""
    cols = first_line.rstrip("\n").split("\t")
    return len(cols) >= 7 and cols[2][:4].isdigit()  # the year: 2012, 2012test, ...


def read_sts_benchmark(path: Path) -> Pairs:
    """STS Benchmark rows (tab-separated, no csv quoting: sentences contain bare quotes)."""
    s1, s2, gold = [], [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if not line:
                continue
            cols = line.split("\t")
            if len(cols) < 7:
                raise ValueError(f"{path}:{lineno}: expected at least 7 tab-separated fields, got {len(cols)}")
            gold.append(_number(cols[4], f"{path}:{lineno}"))
            s1.append(cols[5])
            s2.append(cols[6])
    return s1, s2, np.asarray(gold, dtype=np.float64)


def read_delimited(path: Path, cols: PairColumns, delimiter: str) -> Pairs:
    """A TSV / CSV whose first row names the columns. CSV fields may be quoted; TSV fields are taken as they
    are (no quoting, as in STS Benchmark, whose sentences hold bare quotes)."""
    s1, s2, gold = [], [], []
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter=delimiter, quoting=quoting)
        header = next(rows, None)
        if header is None:
            raise ValueError(f"{path} is empty")
        header = [h.strip() for h in header]
        if any(c not in header for c in cols.names()):
            raise ValueError(_missing(cols, header, path))
        i1, i2, isc = (header.index(c) for c in cols.names())
        for row in rows:
            where = f"{path}:{rows.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if len(row) <= max(i1, i2, isc):
                raise ValueError(f"{where}: expected {len(header)} fields, got {len(row)}")
            s1.append(_text(row[i1], cols.sentence1, where))
            s2.append(_text(row[i2], cols.sentence2, where))
            gold.append(_number(row[isc].strip(), where))
    return s1, s2, np.asarray(gold, dtype=np.float64)


def read_jsonl(path: Path, cols: PairColumns) -> Pairs:
    """One JSON object per line with the three named keys."""
    s1, s2, gold = [], [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: malformed JSON line ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            if any(c not in obj for c in cols.names()):
                raise ValueError(_missing(cols, list(obj), Path(where)))
            s1.append(_text(obj[cols.sentence1], cols.sentence1, where))
            s2.append(_text(obj[cols.sentence2], cols.sentence2, where))
            gold.append(_number(obj[cols.score], where))
    return s1, s2, np.asarray(gold, dtype=np.float64)


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                return line
    return ""


def pairs_file(path: str | Path) -> Path:
    """The file a path names: itself, or a folder's sts-test.csv (the STS Benchmark test split)."""
    path = Path(path).expanduser()
    return path / "sts-test.csv" if path.is_dir() else path


def load_pairs(path: str | Path, columns: PairColumns | None = None) -> Pairs:
    """(sentences1, sentences2, gold scores) from an STS Benchmark file or folder (its sts-test.csv), a
    .jsonl file, or a TSV / CSV with a header row (tabs when the header has any, else commas). Giving
    `columns` means the file has named columns, so an STS Benchmark file is only guessed without them."""
    path = pairs_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: give a pairs file (.tsv, .csv, .jsonl) or the stsbenchmark folder")
    try:
        first = _first_line(path)
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    if not first:
        raise ValueError(f"{path} is empty")
    if path.suffix.lower() in (".jsonl", ".ndjson") or first.lstrip().startswith("{"):
        out = read_jsonl(path, columns or PairColumns())
    elif columns is None and is_sts_benchmark(first):
        out = read_sts_benchmark(path)
    else:
        out = read_delimited(path, columns or PairColumns(), "\t" if "\t" in first else ",")
    if len(out[2]) < 2:
        raise ValueError(f"{path}: {len(out[2])} pair(s); a correlation needs at least 2")
    if np.ptp(out[2]) == 0:
        raise ValueError(f"{path}: every pair has the same score {out[2][0]:g}; a correlation needs varied scores")
    return out
