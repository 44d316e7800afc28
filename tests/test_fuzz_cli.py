"""Property-based bad input against the CLI (hypothesis), run in-process through encoderkit.cli.main with a fake
encoder: random files for `index add` (JSONL lines of random JSON with NaN, huge integers, lone surrogates, NUL and
deep nesting; CSV and text files of random bytes), random `--where` trees for `search` and `index delete`, random
`--ids`, queries and field names (on both backends: a folder, PostgreSQL + pgvector), random `encode` inputs.
Every run ends with rc 0, or rc 2 and one line on stderr (argparse's own usage errors: its usage and one error
line), never a traceback; a refused write leaves the collection's count unchanged, an accepted one moves it by
exactly what was reported, and it always passes check(). `index add` of files all skipped (not UTF-8) is rc 1,
with the reasons in its report."""
from __future__ import annotations

import json
import math
import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import encoderkit
from encoderkit.cli import main as cli_main
from encoderkit.store import Collection
from pg_server import collection_url, pg_url, unique_name  # noqa: F401  (pg_url: the session's server)
from store_fakes import FakeEncoder

FUZZ = settings(max_examples=int(os.environ.get("ENCODERKIT_FUZZ_EXAMPLES", "40")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
ANY_CHAR = st.characters(exclude_categories=())  # lone surrogates included: argv decoded with surrogateescape has them
NASTY = ["", " ", "\x00", "a\x00b", "\ud800", "abc\udfff", "\udcff", "\u202e", "\ufeff", "-", "--", "-k", "--json",
         "{}", "[]", "null", "NaN", "$eq", "a.b", "\n", "w1 w2"]
TEXT = st.one_of(st.text(ANY_CHAR, max_size=20), st.sampled_from(NASTY))
NUMBERS = st.one_of(st.integers(), st.floats(), st.sampled_from(
    [math.nan, math.inf, -math.inf, 2 ** 63, -(2 ** 63) - 1, 10 ** 400, 1e308, -0.0]))
JSON = st.recursive(st.one_of(st.none(), st.booleans(), NUMBERS, TEXT),
                    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(TEXT, c, max_size=3)), max_leaves=8)
FIELDS = st.one_of(st.sampled_from(["n", "lang", "a.b", "missing", "n\n", "$and", ""]), TEXT)
OPS = st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$and", "$or", "$not", "$regex"])
LEAF = st.one_of(st.builds(lambda f, v: {f: v}, FIELDS, JSON), st.builds(lambda f, o, v: {f: {o: v}}, FIELDS, OPS, JSON))
WHERE_TREE = st.recursive(LEAF, lambda c: st.one_of(
    st.builds(lambda o, xs: {o: xs}, st.sampled_from(["$and", "$or", "$not"]), st.lists(c, max_size=3)),
    st.dictionaries(FIELDS, c, max_size=2)), max_leaves=6)
def nested_where(depth: int) -> str:
    """The JSON text of a filter with $and / $or nested `depth` levels deep."""
    return '{"$or": [{"lang": "en"}, ' * depth + '{"n": 1}' + "]}" * depth


WHERE = st.one_of(st.builds(json.dumps, WHERE_TREE), st.builds(json.dumps, JSON), TEXT,
                  st.builds(lambda f, o, v: json.dumps({f: {o: v}}), st.sampled_from(["n", "a.b"]), OPS, NUMBERS),
                  st.sampled_from([20, 200_000]).map(lambda n: "[" * n + "]" * n),
                  st.sampled_from([17, 40, 400, 5000]).map(nested_where),
                  st.sampled_from([257, 3000]).map(lambda n: json.dumps({"$and": [{"n": {"$ne": i}} for i in range(n)]})))
SEED = [{"id": f"s{i}", "text": f"river mountain {i}", "n": i, "lang": "en" if i % 2 else "de", "a": {"b": i}}
        for i in range(6)]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh ENCODERKIT_HOME; models replaced by FakeEncoder."""
    monkeypatch.setenv("ENCODERKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(encoderkit, "load", lambda name, **kw: FakeEncoder(name="fake"))
    return tmp_path


@pytest.fixture(params=["embedded", "pgvector"])
def target(request, home, capsys) -> tuple[str, object]:
    """(NAME argument, location for a fresh handle) of a collection holding six documents: `c` under
    ENCODERKIT_HOME, or a collection of the session's PostgreSQL server named by its URL."""
    if request.param == "embedded":
        name, where = "c", home / "home" / "collections" / "c"
    else:
        name = where = collection_url(request.getfixturevalue("pg_url"), unique_name("cli"))
    seed = home / "seed.jsonl"
    seed.write_text("".join(json.dumps(d) + "\n" for d in SEED), encoding="utf-8")
    assert cli_main(["index", "create", name, "--model", "fake"]) == 0
    assert cli_main(["index", "add", name, str(seed)]) == 0
    capsys.readouterr()
    return name, where


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    """main(argv) in-process: (rc, stdout, stderr); argparse's SystemExit becomes its code."""
    try:
        code = cli_main(argv)
    except SystemExit as exc:  # argparse: usage and one error line, rc 2
        code = exc.code
        out, err = capsys.readouterr()
        assert code == 2 and err.strip().splitlines()[-1].startswith("encoderkit") and "Traceback" not in err, err
        return code, out, ""
    out, err = capsys.readouterr()
    return code, out, err.strip()


def check_outcome(code: int, err: str, argv: list[str]) -> None:
    """rc 0, or rc 2 with exactly one line on stderr naming the command; never a traceback."""
    assert code in (0, 2), (code, err, argv)
    assert "Traceback" not in err, (err, argv)
    if code == 2 and err:
        assert len(err.splitlines()) == 1 and err.startswith("encoderkit "), (err, argv)


def count(target) -> int:
    col = Collection.open(target[1], create=False)
    try:
        report = col.check()
        assert report["ok"], report
        return col.count()
    finally:
        col.close()


# ------------------------------------------------------------------ index add
def _jsonl_line(obj) -> str:
    """One JSONL line: NaN / Infinity as Python writes them, surrogates as \\uXXXX escapes."""
    return json.dumps(obj)


RECORD = st.one_of(st.fixed_dictionaries({"text": st.one_of(TEXT, JSON)}, optional={
    "id": st.one_of(TEXT, st.sampled_from(["s1", "new1"]), JSON), "n": JSON, "meta": JSON, "lang": TEXT}), JSON)
JSONL = st.lists(st.one_of(st.builds(_jsonl_line, RECORD), st.text(ANY_CHAR, max_size=30),
                           st.sampled_from([20, 100_000]).map(lambda n: '{"text": "x", "d": ' + "[" * n + "]" * n + "}")),
                 max_size=5).map(lambda lines: "\n".join(lines) + "\n")
CSV = st.lists(st.lists(st.one_of(TEXT, st.sampled_from(['"', '""', '"a,b"', ",", "\r"])), max_size=4),
               max_size=5).map(lambda rows: "id,text,n\n" + "\n".join(",".join(r) for r in rows) + "\n")


def _write(path, text: str) -> None:
    """Write `text` as UTF-8; lone surrogates go out as the invalid bytes a broken producer would write."""
    path.write_bytes(text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(kind=st.sampled_from(["jsonl", "csv", "txt"]), jsonl=JSONL, csv=CSV, raw=st.binary(max_size=60),
       text_field=st.one_of(st.just("text"), TEXT), id_field=st.one_of(st.just("id"), TEXT),
       template=st.one_of(st.none(), TEXT, st.sampled_from(["{text} {n}", "{", "{missing}", "{0}", "{text!r}"])))
def test_index_add_of_random_files_adds_all_or_nothing(home, target, capsys, kind, jsonl, csv, raw, text_field,
                                                       id_field, template):
    path = home / f"in.{kind}"
    if kind == "txt":
        path.write_bytes(raw)
    else:
        _write(path, jsonl if kind == "jsonl" else csv)
    argv = ["index", "add", target[0], str(path), "--json", "--text-field", text_field, "--id-field", id_field]
    argv += ["--template", template] if template is not None else []
    before = count(target)
    code, out, err = run(capsys, argv)
    if code == 1:  # every file skipped (not UTF-8, ...): said in the report, nothing stored
        report = json.loads(out)
        assert report["errors"] and report["added"] == 0 and count(target) == before, report
        return
    check_outcome(code, err, argv)
    if code == 0:  # "added" counts new and changed documents (a changed one replaces its old version)
        report = json.loads(out)
        assert before <= count(target) == report["documents"] <= before + report["added"], report
    else:
        assert count(target) == before, "a refused add stored documents"


# ------------------------------------------------------------------ search and delete
@FUZZ
@example(query="w1", where='{"n": 1' + "0" * 400 + "}", k=5, mode=None, alpha=None)  # was a traceback (OverflowError)
@example(query="w1", where=nested_where(40), k=5, mode="keyword", alpha=None)  # was a traceback (SQLite parser)
@example(query="w1", where='{"n": NaN}', k=5, mode="hybrid", alpha=None)  # refused, as NaN is at ingest
@example(query="w1", where="\x1e0", k=5, mode=None, alpha=None)  # the message quoted U+001E: two lines
@example(query="--", where="a\nb", k=5, mode=None, alpha=None)  # argparse's error quoted the line break: two lines
@given(query=TEXT, where=st.one_of(st.none(), WHERE), k=st.one_of(st.integers(-3, 2000), TEXT),
       mode=st.sampled_from([None, "vector", "keyword", "hybrid", "sparse"]), alpha=st.one_of(st.none(), NUMBERS))
def test_search_with_random_filters_is_a_result_or_one_line(target, capsys, query, where, k, mode, alpha):
    argv = ["search", target[0], query, "--json", "-k", str(k)]
    argv += ["--where", where] if where is not None else []
    argv += ["--mode", mode] if mode else []
    argv += ["--fusion", "weighted", "--alpha", str(alpha)] if alpha is not None else []
    code, out, err = run(capsys, argv)
    check_outcome(code, err, argv)
    if code == 0 and out:
        assert isinstance(json.loads(out), list)


def test_ids_that_cannot_be_stored_are_missing_ids(target, capsys):
    """An id with a lone surrogate (argv decodes undecodable bytes to them) was refused at ingest, so it names no
    document: `index delete --ids` ignores it like any missing id and `index get` says it is not there."""
    code, out, err = run(capsys, ["index", "delete", target[0], "--json", "--ids", "\udcff", "s1"])
    assert (code, json.loads(out)["deleted_documents"], err) == (0, 1, "")
    code, out, err = run(capsys, ["index", "get", target[0], "\udcff"])
    assert code == 1 and "no document '\\udcff'" in err, err


@FUZZ
@example(where='{"n": {"$in": [1' + "0" * 30 + "]}}", ids=None)  # was a traceback (OverflowError)
@example(where=json.dumps({"$and": [{"n": {"$ne": i}} for i in range(3000)]}), ids=None)  # was a traceback (SQLite)
@example(where=nested_where(400), ids=None)  # recursion
@example(where="\r:", ids=None)  # the message quoted the \r: two lines
@example(where="\ud800", ids=None)  # printing the message failed (UnicodeEncodeError) on a strict stream
@example(where=None, ids=["\ud800", "s1"])  # the store could not bind the id (UnicodeEncodeError): now missing
@example(where=None, ids=["s1", "-k", "\ud800"])  # argparse's usage error quoting the surrogate failed to print
@given(where=st.one_of(st.none(), WHERE), ids=st.one_of(st.none(), st.lists(st.one_of(TEXT, st.just("s1")),
                                                                                min_size=1, max_size=3)))
def test_delete_with_random_filters_deletes_what_it_reports(home, target, capsys, where, ids):
    if where is None and ids is None:
        ids = ["s2"]  # never the whole collection: `index delete c` alone drops it
    argv = ["index", "delete", target[0], "--json"] + (["--where", where] if where is not None else [])
    argv += ["--ids", *ids] if ids is not None else []
    before = count(target)
    code, out, err = run(capsys, argv)
    check_outcome(code, err, argv)
    if code == 0:
        report = json.loads(out)
        assert count(target) == before - report["deleted_documents"] == report["documents"]
    else:
        assert count(target) == before, "a refused delete deleted documents"
    if count(target) < 3:
        assert cli_main(["index", "add", target[0], str(home / "seed.jsonl")]) == 0
        capsys.readouterr()


# ------------------------------------------------------------------ encode
@FUZZ
@given(kind=st.sampled_from(["jsonl", "csv", "txt"]), jsonl=JSONL, csv=CSV, raw=st.binary(max_size=60),
       field=st.one_of(st.just("text"), TEXT), out=st.sampled_from(["v.npy", "v.jsonl", "v.txt", "v.parquet"]),
       dims=st.one_of(st.none(), st.integers(-2, 100)), prompt=st.one_of(st.none(), TEXT))
def test_encode_of_random_files_is_vectors_or_one_line(home, capsys, kind, jsonl, csv, raw, field, out, dims, prompt):
    path = home / f"in.{kind}"
    if kind == "txt":
        path.write_bytes(raw)
    else:
        _write(path, jsonl if kind == "jsonl" else csv)
    argv = ["encode", str(path), "-o", str(home / out), "--model", "fake", "--field", field, "--column", field]
    argv += ["--dimensions", str(dims)] if dims is not None else []
    argv += ["--prompt", prompt] if prompt is not None else []
    code, _, err = run(capsys, argv)
    check_outcome(code, err, argv)
