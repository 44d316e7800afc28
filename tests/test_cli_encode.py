"""The `encoderkit encode`, `info` and `demo` commands with --json: the entry point as a user runs it (a
subprocess: exit code, stdout, stderr) for the first encode, the error messages and the demo; the other
model-loading commands in-process through the same `main` (each subprocess re-imports torch and reloads the model,
about 3 s of CPU, which those claims do not need)."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import encoderkit
from encoderkit.cli import main

CLI = [sys.executable, "-m", "encoderkit.cli"]


def run(*args, input=None):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, input=input, timeout=600)


@pytest.fixture
def cli(capsys, monkeypatch):
    """cli(*args, input=None): `main(args)` in this process, with the (returncode, stdout, stderr) of `run`."""

    def call(*args, input=None):
        if input is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(input))
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)
    return call


@pytest.fixture(scope="module")
def enc():
    return encoderkit.load("all-MiniLM-L6-v2")


def test_encode_txt_npy_matches_python_api(tmp_path, enc):
    src = tmp_path / "in.txt"
    src.write_text("first line\n\nsecond line\nthird\n")
    out = run("encode", str(src), "-o", str(tmp_path / "v.npy"), "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["count"] == 3 and summary["dim"] == 384
    v = np.load(tmp_path / "v.npy")
    assert np.abs(v - enc.encode(["first line", "second line", "third"])).max() <= 1e-5


def test_encode_compute_int8(tmp_path, enc, cli):
    src = tmp_path / "in.txt"
    texts = ["a cat sat on the mat", "protein folding in yeast cells", "the stock market fell sharply today"]
    src.write_text("\n".join(texts) + "\n")
    out = cli("encode", str(src), "-o", str(tmp_path / "v.npy"), "--compute", "int8", "--json")
    assert out.returncode == 0, out.stderr
    v, ref = np.load(tmp_path / "v.npy"), enc.encode(texts)
    cos = (v * ref).sum(1) / (np.linalg.norm(v, axis=1) * np.linalg.norm(ref, axis=1))
    assert 0.9 < cos.min() and cos.max() < 0.9999999  # close to fp32, but really computed in int8
    bad = cli("encode", str(src), "-o", str(tmp_path / "w.parquet"), "--engine", "ray", "--compute", "int8")
    assert bad.returncode != 0 and "--compute applies to the local engine" in bad.stderr
    assert not (tmp_path / "w.parquet").exists()


def test_encode_jsonl_csv_stdin_and_jsonl_output(tmp_path, enc, cli):
    (tmp_path / "in.jsonl").write_text('{"id": "a", "body": "alpha"}\n{"id": "b", "body": "beta"}\n')
    out = cli("encode", str(tmp_path / "in.jsonl"), "--field", "body", "-o", str(tmp_path / "v.jsonl"), "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b"]
    assert np.abs(np.array(rows[1]["embedding"]) - enc.encode("beta")).max() <= 1e-5
    (tmp_path / "in.csv").write_text('id,title\n1,"one, with comma"\n2,two\n')
    out = cli("encode", str(tmp_path / "in.csv"), "--column", "title", "-o", str(tmp_path / "c.npy"),
              "--dimensions", "32", "--json")
    assert out.returncode == 0, out.stderr
    assert np.load(tmp_path / "c.npy").shape == (2, 32)
    out = cli("encode", "-", "-o", str(tmp_path / "s.npy"), "--precision", "ubinary", input="from stdin\n")
    assert out.returncode == 0, out.stderr
    assert np.load(tmp_path / "s.npy").shape == (1, 48)
    assert "texts/s" in out.stderr  # throughput printed at the end


def test_encode_bad_input_messages(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{not json\n')
    out = run("encode", str(tmp_path / "bad.jsonl"), "-o", str(tmp_path / "x.npy"))
    assert out.returncode == 2 and "bad.jsonl:2" in out.stderr and "malformed" in out.stderr
    assert not (tmp_path / "x.npy").exists()  # nothing half-written
    out = run("encode", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "x.npy"))
    assert out.returncode == 2 and "not found" in out.stderr
    (tmp_path / "in.txt").write_text("x\n")
    out = run("encode", str(tmp_path / "in.txt"), "-o", str(tmp_path / "x.bin"))
    assert out.returncode == 2 and ".npy or .jsonl" in out.stderr
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    out = run("encode", str(tmp_path / "latin1.txt"), "-o", str(tmp_path / "x.npy"))
    assert out.returncode == 2 and "UTF-8" in out.stderr


def test_info_json(cli):
    out = cli("info", "all-MiniLM-L6-v2", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["family"] == "bert" and info["layers"] == 6 and info["hidden_size"] == 384
    assert info["embedding_size"] == 384 and info["max_length"] == 256 and info["pooling"] == "mean"
    assert info["parameters"] == 22_565_376
    bad = run("info", "/nonexistent/model")
    assert bad.returncode == 2 and "not found" in bad.stderr


@pytest.mark.slow
def test_demo_answers_questions_from_stdlib_docstrings(tmp_path):
    qs = ["-q", "parse command line options and arguments", "-q", "decode a base64 string"]
    out = run("demo", "--json", "-k", "5", "--store", str(tmp_path), *qs)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["documents"] > 3000 and res["built"] and res["mode"] == "hybrid"
    again = run("demo", "--json", "-k", "5", "--store", str(tmp_path), *qs)  # persistent: reopened, same answers
    assert again.returncode == 0, again.stderr
    res2 = json.loads(again.stdout)
    assert not res2["built"] and res2["documents"] == res["documents"]
    assert [[h["id"] for h in r["hits"]] for r in res2["questions"]] == [[h["id"] for h in r["hits"]] for r in res["questions"]]
    hits = {r["question"]: [h["id"] for h in r["hits"]] for r in res["questions"]}
    assert any(h.startswith(("argparse", "getopt", "optparse")) for h in hits["parse command line options and arguments"])
    assert any(h.startswith(("base64", "binascii")) for h in hits["decode a base64 string"])


def test_demo_reopens_a_current_collection_without_parsing_the_stdlib(tmp_path, monkeypatch, cli):
    """The demo stores the stdlib's fingerprint (file names, sizes, times) with its collection: a later run whose
    fingerprint and count match reuses the collection without parsing every stdlib file; a changed stdlib is
    parsed again (and rebuilt only if the documents differ)."""
    from encoderkit.datasets import stdlib
    from store_fakes import FakeEncoder

    docs = [stdlib.Doc(f"mod.f{i}", f"function number {i} decodes base64 strings and parses options", "function",
                       "mod") for i in range(6)]
    parsed = []
    monkeypatch.setattr(encoderkit, "load", lambda name, **kw: FakeEncoder(name="fake"))
    monkeypatch.setattr(stdlib, "stdlib_docstrings", lambda: parsed.append(1) or docs)
    args = ("demo", "--json", "-k", "2", "--store", str(tmp_path), "-q", "decode base64")
    first = json.loads(cli(*args).stdout)
    assert first["built"] and first["documents"] == 6 and len(parsed) == 1
    again = json.loads(cli(*args).stdout)
    assert not again["built"] and again["documents"] == 6 and len(parsed) == 1  # not parsed again
    assert [h["id"] for h in again["questions"][0]["hits"]] == [h["id"] for h in first["questions"][0]["hits"]]
    monkeypatch.setattr(stdlib, "stdlib_fingerprint", lambda: "another-python")
    changed = json.loads(cli(*args).stdout)
    assert not changed["built"] and len(parsed) == 2  # parsed, same documents: nothing to rebuild
    docs.append(stdlib.Doc("mod.g", "a new function that reads gzip compressed files", "function", "mod"))
    monkeypatch.setattr(stdlib, "stdlib_fingerprint", lambda: "a-newer-python")
    grown = json.loads(cli(*args).stdout)
    assert grown["built"] and grown["documents"] == 7 and len(parsed) == 3
