"""Multi-vector (late-interaction, ColBERT) encoders against their references on tiny random BERTs: sentence-
transformers 6 `MultiVectorEncoder` folders (token-level Dense, [Q]/[D] prompts, [MASK] query expansion to a fixed
length, punctuation skiplist, Normalize) and PyLate ColBERT folders (markers inserted as tokens); shapes and vectors
within 1e-5 on both sides, MaxSim scores equal theirs, and save round trips. Also late chunking."""
from __future__ import annotations

import json
import logging
import string

import numpy as np
import pytest
import torch

import encoderkit
from encoderkit.tasks.maxsim import maxsim, maxsim_batch
from tiny_checkpoints import SPECIALS

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
st = pytest.importorskip("sentence_transformers")
transformers = pytest.importorskip("transformers")
logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
logging.getLogger("transformers").setLevel(logging.ERROR)

V = 140
PUNCT = list(string.punctuation)
N_WORDS = V - len(SPECIALS) - len(PUNCT)
rng = np.random.default_rng(7)


def _text(n):
    toks = [f"w{rng.integers(N_WORDS)}" if rng.random() > 0.25 else str(rng.choice(list(".,;:!?()"))) for _ in range(n)]
    return " ".join(toks)


TEXTS = [_text(n) for n in (1, 3, 5, 8, 11, 2, 17, 25)] + ["w1 , w2 . w3 !", "( w4 )"]
QUERIES = [_text(n) for n in (1, 2, 4, 6, 9)] + ["w5 ? w6", "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14"]


def _tokenizer(folder, extra_special=()):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(SPECIALS + PUNCT)}
    vocab.update({f"w{i}": len(vocab) for i in range(N_WORDS)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    if extra_special:
        tok.add_special_tokens(list(extra_special))
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
        "sep_token": "[SEP]", "mask_token": "[MASK]", "model_max_length": 64}))
    return tok.get_vocab_size()


def _bert(folder, seed=0, vocab=V):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64)
    m = transformers.BertModel(cfg).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "LayerNorm" in n:
                p.add_(torch.randn_like(p) * 0.1)
    m.save_pretrained(folder)
    return folder


def _mve_folder(tmp, *, expansion=None, query_length=None, document_length=None, skiplist=True, normalize=True,
                prompts=True, dim=16):
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    src = tmp / "bert"
    if not src.exists():
        src.mkdir()
        n = _tokenizer(src, extra_special=("[Q]", "[D]"))
        _bert(src, vocab=n)
    tr = Transformer(str(src), query_length=query_length, document_length=document_length, query_expansion=expansion)
    torch.manual_seed(3)
    mods = [tr, Dense(32, dim, bias=False, activation_function=torch.nn.Identity(), module_input_name="token_embeddings"),
            MultiVectorMask(skiplist_words=PUNCT if skiplist else None)]
    if normalize:
        mods.append(Normalize(module_input_name="token_embeddings"))
    model = MultiVectorEncoder(modules=mods, device="cpu",
                               prompts={"query": "[Q] ", "document": "[D] "} if prompts else None)
    out = tmp / "mve"
    model.save(str(out))
    return out


def _check_lists(ours, ref, tol=1e-5):
    ref = [np.asarray(r.cpu() if hasattr(r, "cpu") else r) for r in ref]
    assert [o.shape for o in ours] == [r.shape for r in ref]
    assert all(o.dtype == np.float32 for o in ours)
    diff = max(float(np.abs(o - r).max()) for o, r in zip(ours, ref) if o.size)
    assert diff <= tol, f"max abs diff {diff}"
    return diff


CASES = {
    "colbert": dict(expansion={"strategy": "fixed", "attend": False, "length": 12}, document_length=20),
    "attend": dict(expansion={"strategy": "fixed", "attend": True, "length": 10}, document_length=30),
    "min": dict(expansion={"strategy": "min", "attend": False, "length": 8}, query_length=16),
    "plain": dict(skiplist=False, prompts=False),
    "unnormalized": dict(normalize=False, query_length=6, document_length=9),
}


@pytest.mark.parametrize("case", list(CASES))
def test_st_multivector_encoder(tmp_path, case):
    folder = _mve_folder(tmp_path, **CASES[case])
    ref = st.MultiVectorEncoder(str(folder), device="cpu")
    enc = encoderkit.load(folder)
    q, d = enc.encode_query(QUERIES, output="multivector", batch_size=3), enc.encode_document(TEXTS, output="multivector")
    _check_lists(q, ref.encode_query(QUERIES, convert_to_numpy=True))
    _check_lists(d, ref.encode_document(TEXTS, convert_to_numpy=True))
    if case == "colbert":  # fixed-length queries: every query is exactly 12 vectors, documents lose punctuation
        assert {x.shape for x in q} == {(12, 16)}
        assert len(d[-1]) == len(enc.tokenize(["[D] " + TEXTS[-1]])[0].ids) - 2
    # MaxSim equals the reference's scores
    ours = maxsim_batch(q, d)
    theirs = ref.similarity([torch.as_tensor(x) for x in q], [torch.as_tensor(x) for x in d]).numpy()
    assert np.abs(ours - theirs).max() <= 1e-4
    assert abs(maxsim(q[0], d[1]) - theirs[0, 1]) <= 1e-4
    # a single string gives one array; saving writes a folder both load with the same vectors
    assert enc.encode_query(QUERIES[0], output="multivector").shape == q[0].shape
    enc.save(tmp_path / "resaved")
    again = encoderkit.load(tmp_path / "resaved")
    ref2 = st.MultiVectorEncoder(str(tmp_path / "resaved"), device="cpu")
    _check_lists(again.encode_query(QUERIES, output="multivector"), ref.encode_query(QUERIES, convert_to_numpy=True))
    _check_lists(again.encode_document(TEXTS, output="multivector"), ref2.encode_document(TEXTS, convert_to_numpy=True))


def test_plain_model_gives_normalized_token_vectors(tmp_path):
    src = tmp_path / "bert"
    src.mkdir()
    _bert(src, vocab=_tokenizer(src))
    enc = encoderkit.load(src)
    with pytest.raises(ValueError, match="token_late"):
        enc.encode(TEXTS[:1], output="multivector")
    enc.token_late = True
    mv = enc.encode(TEXTS[:3], output="multivector")
    tok = enc.encode(TEXTS[:3], output="tokens")
    for a, b in zip(mv, tok):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b / np.linalg.norm(b, axis=1, keepdims=True), atol=1e-6)
    with pytest.raises(ValueError, match="sparse"):
        enc.encode(TEXTS[:1], output="sparse")


def test_maxsim_batch_matches_pairs():
    r = np.random.default_rng(0)
    qs = [r.standard_normal((n, 8)).astype(np.float32) for n in (1, 4, 7)]
    ds = [r.standard_normal((n, 8)).astype(np.float32) for n in (3, 1, 9, 2)] + [np.zeros((0, 8), np.float32)]
    s = maxsim_batch(qs, ds, batch_size=2)
    assert s.shape == (3, 5)
    for i, q in enumerate(qs):
        for j, d in enumerate(ds):
            assert abs(s[i, j] - maxsim(q, d)) <= 1e-5
    assert (s[:, -1] == 0).all()


# ------------------------------------------------------------------ PyLate ColBERT folders
def _pylate_folder(tmp, **kw):
    """A ColBERT folder written by PyLate from a tiny BERT ([Q] / [D] markers added to the vocabulary and inserted as
    tokens), and the PyLate model that wrote it as the oracle. PyLate 1.6 predates sentence-transformers 6: its
    tokenize is given back the 5.x Transformer.tokenize (pad / truncate at max_seq_length), its sort key the text
    length, its save the model config dict; and the Dense config is written without the 6.x module names, as PyLate
    writes it."""
    models = pytest.importorskip("pylate.models")
    from sentence_transformers.models import Transformer

    src = tmp / "bert"
    src.mkdir()
    _bert(src, vocab=_tokenizer(src))
    tr = Transformer(str(src))
    torch.manual_seed(1)
    cb = models.ColBERT(modules=[tr, models.Dense(32, 16, bias=False)], device="cpu", **kw)
    cb._model_config = {"model_type": "ColBERT"}
    cb.save(str(tmp / "pylate"))
    first = cb._first_module()
    first.tokenize = lambda texts, padding=True: dict(first.tokenizer(
        texts, padding=padding, truncation="longest_first", return_tensors="pt", max_length=first.max_seq_length))
    cb._text_length = len
    dense_cfg = tmp / "pylate" / "1_Dense" / "config.json"
    c = json.loads(dense_cfg.read_text())
    for k in ("module_input_name", "module_output_name", "use_residual"):
        c.pop(k, None)
    dense_cfg.write_text(json.dumps(c))
    return cb, tmp / "pylate"


def _padded(xs):
    x = torch.nn.utils.rnn.pad_sequence([torch.as_tensor(v) for v in xs], batch_first=True)
    m = torch.nn.utils.rnn.pad_sequence([torch.ones(len(v)) for v in xs], batch_first=True)
    return x, m


@pytest.mark.parametrize("kw", [dict(query_length=12, document_length=20),
                                dict(query_length=9, document_length=14, attend_to_expansion_tokens=True),
                                dict(query_length=10, document_length=24, do_query_expansion=False)],
                         ids=["expansion", "attend", "no_expansion"])
def test_pylate_colbert(tmp_path, kw):
    cb, folder = _pylate_folder(tmp_path, **kw)
    enc = encoderkit.load(folder)
    assert enc.dim == 16 and enc.late.layout == "pylate"
    q, d = enc.encode_query(QUERIES, output="multivector"), enc.encode_document(TEXTS, output="multivector", batch_size=4)
    pq = cb.encode(QUERIES, is_query=True, convert_to_numpy=True)
    pd = cb.encode(TEXTS, is_query=False, convert_to_numpy=True)
    _check_lists(q, pq)
    _check_lists(d, pd)
    if kw.get("do_query_expansion", True):
        assert {x.shape[0] for x in q} == {kw["query_length"]}
    # sentence-transformers 6 reads PyLate folders too, to the same vectors
    mve = st.MultiVectorEncoder(str(folder), device="cpu")
    _check_lists(q, mve.encode_query(QUERIES, convert_to_numpy=True))
    _check_lists(d, mve.encode_document(TEXTS, convert_to_numpy=True))
    # MaxSim equals PyLate's colbert_scores (padded, masked)
    from pylate import scores

    (qx, qm), (dx, dm) = _padded(pq), _padded(pd)
    theirs = scores.colbert_scores(qx, dx, queries_mask=qm, documents_mask=dm, backend="torch").numpy()
    assert np.abs(maxsim_batch(q, d) - theirs).max() <= 1e-4
    # saved back in the PyLate layout: same vectors through encoderkit and sentence-transformers
    enc.save(tmp_path / "resaved")
    assert json.loads((tmp_path / "resaved" / "config_sentence_transformers.json").read_text())["query_prefix"] == "[Q] "
    again = encoderkit.load(tmp_path / "resaved")
    _check_lists(again.encode_query(QUERIES, output="multivector"), pq)
    _check_lists(st.MultiVectorEncoder(str(tmp_path / "resaved"), device="cpu").encode_document(TEXTS, convert_to_numpy=True), pd)


# ------------------------------------------------------------------ late chunking
@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
    from tiny_checkpoints import st_folder

    src = tmp_path_factory.mktemp("dense_bert")
    _bert(src, vocab=_tokenizer(src), seed=5)
    return st_folder(src, tmp_path_factory.mktemp("dense") / "st", pooling="mean", normalize=True)


LONG = " ".join(f"w{i % N_WORDS} w{(7 * i) % N_WORDS} w{(3 * i + 1) % N_WORDS} ." for i in range(12))


def _by_hand(enc, text, span):
    """Mean of the full pass's token vectors whose characters fall in span, normalized."""
    e = enc.tokenize([text])[0]
    hidden = enc.encode([text], output="tokens")[0]
    rows = [i for i, ((s, t), sp) in enumerate(zip(e.offsets, e.special_tokens_mask))
            if not sp and s < span[1] and t > span[0]]
    v = hidden[rows].mean(0)
    return v / np.linalg.norm(v)


def test_late_chunking_pools_the_full_pass(dense_dir):
    enc = encoderkit.load(dense_dir)
    spans = [(0, 20), (20, 61), (61, len(LONG))]
    got = enc.encode(LONG, chunks=spans)
    assert got.shape == (3, enc.dim) and got.dtype == np.float32
    for v, span in zip(got, spans):
        assert np.abs(v - _by_hand(enc, LONG, span)).max() <= 1e-6
        alone = enc.encode(LONG[span[0]:span[1]])  # the chunk encoded by itself has not seen the rest of the text
        assert np.abs(v - alone).max() > 1e-3
    # sentences and token windows
    sents = enc.encode(LONG, chunks="sentences")
    assert sents.shape == (12, enc.dim)
    first = LONG.index(".") + 1
    assert np.abs(sents[0] - _by_hand(enc, LONG, (0, first))).max() <= 1e-6
    windows = enc.encode(LONG, chunks=10)
    n_tokens = len(enc.tokenize([LONG])[0].ids) - 2
    assert windows.shape == (-(-n_tokens // 10), enc.dim)
    # several texts: one array each; span lists per text
    two = enc.encode([LONG, LONG[:30]], chunks=[spans, [(0, 10), (10, 30)]])
    assert two[0].shape == (3, enc.dim) and two[1].shape == (2, enc.dim)
    assert np.abs(two[0] - got).max() <= 1e-6


def test_late_chunking_errors(dense_dir):
    enc = encoderkit.load(dense_dir, max_length=16)
    with pytest.raises(ValueError, match="no token within"):
        enc.encode(LONG, chunks=[(0, 10), (len(LONG) - 10, len(LONG))])
    with pytest.raises(ValueError, match="not a span"):
        enc.encode(LONG, chunks=[(5, 2)])
    with pytest.raises(ValueError, match="chunks must be"):
        enc.encode(LONG, chunks="paragraphs")
