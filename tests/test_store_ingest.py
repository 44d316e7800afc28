"""Ingest: file types, directories, chunking with overlap, duplicate skipping, re-runs, bad files."""
from __future__ import annotations

import json
import os

import pytest

from encoderkit.store import Collection
from encoderkit.store.ingest import chunk_text
from store_fakes import FakeEncoder


@pytest.fixture
def col(tmp_path):
    c = Collection.open(tmp_path / "col", FakeEncoder())
    yield c
    c.close()


def make_tree(root):
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("sunshine and beaches in the summer warmth", encoding="utf-8")
    (root / "sub" / "b.md").write_text("# Snow\nwinter storms and cold mountain passes", encoding="utf-8")
    (root / "c.jsonl").write_text("\n".join(json.dumps(o) for o in [
        {"id": "j1", "text": "python code and rust code", "year": 2021},
        {"_id": "j2", "text": "cheese bread and wine", "year": 2019, "tags": ["food"]},
        {"text": "a line without an id", "year": 2024},
    ]) + "\n", encoding="utf-8")
    (root / "d.csv").write_text("id,text,year,lang\nr1,music on the piano,2020,en\nr2,\"guitar, loud\",2018,de\n",
                                encoding="utf-8")
    (root / "dup.txt").write_text("sunshine  and beaches in the summer\twarmth\n", encoding="utf-8")  # same words
    (root / "ignored.bin").write_bytes(b"\x00\x01")


def test_ingest_directory_all_types(tmp_path, col):
    make_tree(tmp_path / "docs")
    rep = col.ingest(tmp_path / "docs", batch_size=3)
    assert rep.files == 5 and rep.errors == []
    assert rep.added == 7 and rep.duplicates == 1 and rep.batches >= 3
    assert col.count() == 7
    assert col.get("j1").metadata["year"] == 2021 and col.get("j2").metadata["tags"] == ["food"]
    assert col.get("r2").text == "guitar, loud" and col.get("r2").metadata == {
        "year": 2018, "lang": "de", "source": str(tmp_path / "docs" / "d.csv")}
    assert col.get("docs/sub/b.md").text.startswith("# Snow")
    assert col.get("docs/c.jsonl:3").metadata["year"] == 2024  # no id: file and line
    assert col.search("summer warmth", k=1)[0].id == "docs/a.txt"
    assert [h.id for h in col.search("python", k=5, mode="keyword", where={"year": {"$gte": 2020}})] == ["j1"]
    # re-running is safe: nothing new, nothing duplicated
    again = col.ingest(tmp_path / "docs", batch_size=3)
    assert again.added == 0 and again.unchanged == 7 and col.count() == 7
    # an edited file replaces its document
    (tmp_path / "docs" / "a.txt").write_text("now about trains and cities", encoding="utf-8")
    third = col.ingest(tmp_path / "docs")
    assert third.added == 1 and col.get("docs/a.txt").text == "now about trains and cities"
    assert col.check()["ok"]


def test_chunking_words_with_overlap(col, tmp_path):
    words = [f"w{i}" for i in range(25)]
    f = tmp_path / "long.txt"
    f.write_text(" ".join(words), encoding="utf-8")
    rep = col.ingest(f, chunk_tokens=10, overlap=3)
    assert rep.chunked == 1 and rep.added == 4
    chunks = [col.get(f"long.txt#{i}") for i in range(4)]
    assert [c.text.split() for c in chunks] == [words[0:10], words[7:17], words[14:24], words[21:25]]
    assert all(c.metadata["parent"] == "long.txt" and c.metadata["chunks"] == 4 for c in chunks)
    assert [c.metadata["chunk"] for c in chunks] == [0, 1, 2, 3]


def test_chunking_by_tokenizer_offsets_keeps_whole_words():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate("the cat sat on mat".split())}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    text = "the cat, sat on the mat; the cat sat."
    parts = chunk_text(text, tok, size=4, overlap=1)
    # tokens: the cat , sat on the mat ; the cat sat .  (12); words cost 1 2 1 1 1 2 1 1 2: whole words only,
    # at most 4 tokens each, the last word of one chunk repeated at the start of the next (overlap 1)
    assert parts == ["the cat, sat", "sat on the", "the mat; the", "the cat sat."]
    assert chunk_text("short", tok, size=4, overlap=1) == ["short"]
    with pytest.raises(ValueError, match="overlap"):
        chunk_text(text, tok, size=4, overlap=4)


def test_bad_files_reported_and_skipped(col, tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    (d / "good.txt").write_text("a perfectly good river text", encoding="utf-8")
    (d / "latin1.txt").write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e".encode("latin-1"))
    os.symlink(d / "gone.txt", d / "dangling.txt")  # unreadable: its target does not exist
    rep = col.ingest(d)
    assert col.count() == 1 and rep.added == 1
    errors = dict(rep.errors)
    assert errors[str(d / "latin1.txt")] == "not UTF-8 text"
    assert "unreadable" in errors[str(d / "dangling.txt")]


def test_malformed_jsonl_names_file_and_line(col, tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"id": "ok", "text": "fine"}\n\n{"id": "x", "text": "broken"\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: malformed JSON"):
        col.ingest(f)
    g = tmp_path / "notext.jsonl"
    g.write_text('{"id": "a", "body": "no text field"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"notext\.jsonl:1: no string field 'text'"):
        col.ingest(g)
    h = tmp_path / "bad.csv"
    h.write_text("id,text\n1,ok\n2,too,many\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.csv:3"):
        col.ingest(h)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        col.ingest(tmp_path / "nowhere")
    assert col.count() == 0
