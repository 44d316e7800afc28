"""Documents, not chunks: chunking real SciFact abstracts on word and sentence boundaries within the model's token
limit; searches of a chunked collection return each document once (its best chunk's score and passage);
"more like this" never returns the document's own chunks; counts say documents and chunks."""
from __future__ import annotations

import json
import re

import pytest

from conftest import data_path
from encoderkit.store import Collection
from encoderkit.store.chunking import chunk_text
from encoderkit.store.documents import OVERFETCH
from pg_server import collection_url, pg_url, unique_name  # noqa: F401  (pg_url: the session's server)
from store_fakes import FakeEncoder


def _abstracts(n: int) -> list[dict]:
    path = data_path("scifact", "corpus.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


@pytest.fixture(scope="module")
def minilm_tokenizer():
    import encoderkit
    from encoderkit.store.ingest import _untruncated

    return _untruncated(encoderkit.load("all-MiniLM-L6-v2").tokenizer)


def test_scifact_chunks_start_and_end_on_words_and_fit_the_token_limit(minilm_tokenizer):
    size, overlap = 64, 16
    chunked = sentence_ends = total = 0
    for doc in _abstracts(300):
        text = doc["text"]
        parts = chunk_text(text, minilm_tokenizer, size, overlap)
        chunked += len(parts) > 1
        pos = prev_end = 0
        for i, part in enumerate(parts):
            start = text.index(part, pos)
            end = start + len(part)
            assert start == 0 or text[start - 1].isspace(), f"{doc['_id']} chunk {i} starts mid-word: {part[:30]!r}"
            assert end == len(text) or text[end].isspace(), f"{doc['_id']} chunk {i} ends mid-word: {part[-30:]!r}"
            assert len(minilm_tokenizer.encode(part, add_special_tokens=False).ids) <= size
            if i:  # what repeats from the previous chunk is at most `overlap` tokens
                shared = text[start:prev_end]
                assert len(minilm_tokenizer.encode(shared, add_special_tokens=False).ids) <= overlap
            prev_end, pos = end, start + 1
            total += 1
            sentence_ends += bool(re.search(r"[.!?][\"')\]]*$", part))
        assert parts[-1].rstrip() == text[-len(parts[-1].rstrip()):], "the end of the document is in a chunk"
    assert chunked > 200  # the claim is about split documents, so most of these abstracts must be split
    assert sentence_ends / total > 0.6, f"only {sentence_ends} of {total} chunks end a sentence"


def test_chunks_fit_a_byte_level_bpe_tokenizer_too():
    """A BPE word's tokens depend on the space before it: chunks are re-checked alone and packed tighter."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = [d["text"] for d in _abstracts(300)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=2000, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    for text in texts[:100]:
        for part in chunk_text(text, tok, 48, 12):
            start = text.index(part)
            assert start == 0 or text[start - 1].isspace()
            assert len(tok.encode(part, add_special_tokens=False).ids) <= 48


def test_a_word_longer_than_a_chunk_is_the_only_thing_cut(minilm_tokenizer):
    dna = "ACGTTGCA" * 12  # one word of 60 WordPiece tokens (a word over 100 characters would be one [UNK])
    parts = chunk_text(f"The sequence {dna} was read twice.", minilm_tokenizer, 16, 4)
    assert parts[0] == "The sequence" and parts[-1] == "was read twice."
    middle = parts[1:-1]
    assert all(p in dna for p in middle) and dna.startswith(middle[0]) and dna.endswith(middle[-1])
    assert all(len(minilm_tokenizer.encode(p, add_special_tokens=False).ids) <= 16 for p in parts)


@pytest.fixture(scope="module", params=["sqlite", "pgvector"])
def chunked(request, tmp_path_factory):
    """600 SciFact abstracts (title + text), split into chunks of at most 48 words (FakeEncoder counts words), in
    the embedded store and in PostgreSQL + pgvector."""
    root = tmp_path_factory.mktemp("docs")
    src = root / "scifact.jsonl"
    src.write_text("".join(json.dumps({"id": d["_id"], "title": d["title"], "text": d["text"]}) + "\n"
                           for d in _abstracts(600)), encoding="utf-8")
    where = root / "col"
    if request.param == "pgvector":
        where = collection_url(request.getfixturevalue("pg_url"), unique_name())
    col = Collection.open(where, FakeEncoder(dim=64))
    col.ingest(src, chunk_tokens=48, overlap=8, progress=False, template="{title} {text}")
    yield col
    col.close()


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_top10_of_a_chunked_collection_are_10_distinct_documents(chunked, mode):
    query = "smoking and the risk of lung cancer"
    chunks = chunked.search(query, k=10, mode=mode, group_by_document=False)
    parents = [h.metadata.get("parent", h.id) for h in chunks]
    assert len(set(parents)) < 10, "premise: the top 10 chunks hold several chunks of one document"
    docs = chunked.search(query, k=10, mode=mode)
    assert len(docs) == 10 and len({h.id for h in docs}) == 10
    assert all("#" not in h.id for h in docs)
    # the chunks grouping looked at (hybrid fuses lists whose depth follows k, so compare at the same depth)
    deep = chunked.search(query, k=10 * OVERFETCH, mode=mode, group_by_document=False)
    first = {}
    for h in deep:  # each document's best chunk, in order of first appearance
        first.setdefault(h.metadata.get("parent", h.id), h)
    assert [h.id for h in docs] == list(first)[:10]
    for h in docs:
        best = first[h.id]
        assert h.score == pytest.approx(best.score) and h.text == best.text and h.scores == best.scores
        assert h.chunk_id == (best.id if best.id != h.id else None)
        assert h.matched_chunks >= 1


def test_grouping_asks_for_more_chunks_until_k_documents():
    from encoderkit.store.documents import fetch_documents
    from encoderkit.store.records import Hit

    rows = [Hit(f"d{d}#{c}", "t", {"parent": f"d{d}", "chunk": c}, 1.0 - (d * 10 + c) / 1000)
            for d in range(50) for c in range(10)]  # 10 chunks a document, best first
    asked = []

    def fetch(n):
        asked.append(n)
        return rows[:n]

    docs = fetch_documents(fetch, 12)
    assert [h.id for h in docs] == [f"d{d}" for d in range(12)] and asked == [48, 192]
    assert [h.chunk_id for h in docs[:2]] == ["d0#0", "d1#0"] and docs[0].matched_chunks == 10
    asked.clear()
    assert len(fetch_documents(fetch, 80)) == 50 and asked == [320, 1280]  # fewer documents than asked: all


def test_more_like_this_never_returns_the_documents_own_chunks(chunked):
    doc = next(h for h in chunked.search("lung cancer smoking", k=10, mode="keyword") if h.chunk_id)
    own = {r[0] for r in chunked.store.rows_by_rids(chunked.document_rids(doc.id)).values()}
    assert len(own) > 1
    for grouped in (True, False):
        hits = chunked.similar(doc.id, k=10, group_by_document=grouped)
        assert len(hits) == 10
        assert not {h.id for h in hits} & (own | {doc.id})
        assert all(h.metadata.get("parent") != doc.id for h in hits)
    assert len({h.id for h in chunked.similar(doc.id, k=10)}) == 10
    like_chunk = chunked.similar(doc.chunk_id, k=10)  # from one chunk (the map's points): its document left out too
    assert len(like_chunk) == 10 and not {h.id for h in like_chunk} & (own | {doc.id})
    with pytest.raises(KeyError, match="no document 'nope'"):
        chunked.similar("nope")


def test_get_document_puts_a_chunked_document_back_together(chunked):
    """On both backends: the id a search returns gives the whole embedded text (title + text, the template), the
    overlap of its chunks once; a chunk id gives the chunk; an unknown id None."""
    docs = {d["_id"]: d for d in _abstracts(600)}
    hits = chunked.search("smoking and the risk of lung cancer", k=10, mode="keyword")
    split = [h for h in hits if h.chunk_id][:3]
    assert split
    for h in split:
        got = chunked.get_document(h.id)
        assert got.id == h.id and got.text == f"{docs[h.id]['title']} {docs[h.id]['text']}"
        assert got.metadata["chunks"] == len(chunked.document_rids(h.id)) > 1 and "parent" not in got.metadata
        assert chunked.get_document(h.chunk_id).id == h.chunk_id
    assert chunked.get_document("nope") is None and chunked.get("nope") is None


def test_counts_say_documents_and_chunks(chunked):
    docs, rows = chunked.document_counts()
    assert rows == chunked.count() and rows > docs
    assert docs == len({(h.metadata or {}).get("parent", h.id) for h in _all(chunked)})


def _all(col):
    ids, _ = col.vectors()
    return [h for h in col.get(ids) if h is not None]


def test_cli_search_lists_documents_with_readable_scores(tmp_path, monkeypatch, capsys):
    import encoderkit
    from encoderkit.cli import main

    monkeypatch.setenv("ENCODERKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(encoderkit, "load", lambda name, **kw: FakeEncoder(name="fake"))
    src = tmp_path / "papers.jsonl"
    src.write_text("".join(json.dumps({"id": d["_id"], "title": d["title"], "text": d["text"]}) + "\n"
                           for d in _abstracts(80)), encoding="utf-8")
    assert main(["index", "add", "papers", str(src), "--model", "fake", "--chunk-tokens", "40"]) == 0
    out = capsys.readouterr().out
    docs, chunks = re.search(r"; (\d+) documents \(([\d,]+) chunks\) in total", out).groups()
    assert int(docs) == 80 and int(chunks.replace(",", "")) > 160

    def table(*extra):
        assert main(["search", "papers", "lung cancer and smoking", "-k", "5", *extra]) == 0
        lines = capsys.readouterr().out.splitlines()
        return lines[0], lines[1].split(), [line.split() for line in lines[2:]]

    head, cols, rows = table()
    assert head.startswith("5 documents (") and "matching chunks) for 'lung cancer and smoking' (hybrid: ranked " \
                                                 "by RRF (k=60) of cosine + BM25)" in head
    assert cols[:4] == ["#", "COSINE", "BM25", "ID"] and len(rows) == 5
    ids = [r[3] for r in rows]
    assert len(set(ids)) == 5 and not any("#" in i for i in ids)
    for r in rows:  # a cosine in [-1, 1] beside an unbounded BM25 ("–" when a list did not return the document)
        assert r[1] == "–" or -1 <= float(r[1]) <= 1
    titles = {d["_id"]: d["title"] for d in _abstracts(80)}
    assert " ".join(rows[0][4:]).startswith(" ".join(titles[ids[0]].split()[:3]))  # the title leads the text
    head, cols, rows = table("--mode", "keyword")
    assert cols[:3] == ["#", "BM25", "ID"] and "(keyword)" in head
    head, cols, rows = table("--chunks")
    assert head.startswith("5 chunks for") and all("#" in r[3] for r in rows)


def test_a_collection_without_chunks_is_searched_as_before(tmp_path):
    col = Collection.open(tmp_path / "plain", FakeEncoder())
    col.add([f"note {i} about rivers and {'lakes' if i % 2 else 'seas'}" for i in range(30)])
    asked = []
    chunk_search = col._ranked_hits
    col._ranked_hits = lambda *a: asked.append(a[3]) or chunk_search(*a)
    hits = col.search("rivers and lakes", k=5, mode="hybrid")
    assert asked == [5] and len(hits) == 5  # no extra candidates: the same fused ranking as before grouping
    assert all(h.chunk_id is None and h.matched_chunks == 1 for h in hits)
    col.close()
