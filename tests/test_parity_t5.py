"""T5 encoder parity (T5, T5 v1.1, mT5, UMT5; the sentence-T5 / GTR pipeline): tiny random checkpoints written by
`transformers` load into encoderkit and give the same hidden states as T5EncoderModel, and the same sentence vectors
as sentence-transformers (mean pooling -> Dense without bias -> Normalize), on inputs longer than the exact
relative-position buckets."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import encoderkit
from encoderkit.checkpoints.weights import CheckpointError, export_mapped
from tiny_checkpoints import sentences, st_folder, write_tokenizer

transformers = pytest.importorskip("transformers")

VOCAB = 120
# d_kv * heads (4 * 12 = 48) != d_model (32), as in t5-3b; 3 layers so the shared bias table is reused
BASE = dict(vocab_size=VOCAB, d_model=32, d_kv=12, d_ff=40, num_layers=3, num_heads=4, pad_token_id=0,
            eos_token_id=6, decoder_start_token_id=0)
CASES = {  # name: (config class, model class, config overrides)
    "t5": ("T5Config", "T5EncoderModel", dict(feed_forward_proj="relu")),  # original T5, sentence-t5, GTR
    "t5-v1.1": ("T5Config", "T5EncoderModel", dict(feed_forward_proj="gated-gelu")),
    "t5-gelu": ("T5Config", "T5EncoderModel", dict(feed_forward_proj="gelu", relative_attention_num_buckets=8,
                                                    relative_attention_max_distance=12)),  # far offsets: last bucket
    "t5-full": ("T5Config", "T5ForConditionalGeneration", dict(feed_forward_proj="relu")),  # decoder in the file
    "mt5": ("MT5Config", "MT5EncoderModel", dict(feed_forward_proj="gated-gelu")),
    "umt5": ("UMT5Config", "UMT5EncoderModel", dict(feed_forward_proj="gated-gelu")),  # one bias table per layer
}


def _make(tmp_path, case: str = "t5", tokenizer: bool = False, max_len: int = 512, **over):
    cfg_cls, model_cls, extra = CASES[case]
    torch.manual_seed(0)
    cfg = getattr(transformers, cfg_cls)(**{**BASE, **extra, **over})
    ref = getattr(transformers, model_cls)(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights, so a mis-mapped norm cannot hide
        for n, p in ref.named_parameters():
            if "layer_norm" in n:
                p.add_(torch.randn_like(p) * 0.2)
    ref.save_pretrained(tmp_path)
    if tokenizer:  # `$A </s>` framing; pad [PAD] = id 0 = config.pad_token_id
        write_tokenizer(tmp_path, VOCAB, "t5", model_max_length=max_len,
                        extra_config={"model_input_names": ["input_ids", "attention_mask"]})
    return ref


def _encoder(ref):
    """The reference encoder stack: T5EncoderModel itself, or the encoder half of a seq2seq model."""
    return ref.get_encoder() if hasattr(ref, "decoder") else ref


def _batch(T: int = 48):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(12, VOCAB, (3, T), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 31:] = 0
    mask[2, 5:] = 0
    ids[mask == 0] = 0
    return ids, mask


def _max_diff(got: torch.Tensor, want: torch.Tensor, mask: torch.Tensor) -> float:
    return (got - want)[mask.bool()].abs().max().item()


def test_relative_buckets_match_transformers():
    """Our bucketing of (key - query) offsets equals T5Attention's, both orientations, at the published settings."""
    from transformers.models.t5.modeling_t5 import T5Attention

    from encoderkit.nn import t5_relative_bucket

    rel = torch.arange(-300, 301)[None, :]
    for nb, md in ((32, 128), (8, 12), (64, 512)):
        want = T5Attention._relative_position_bucket(rel, bidirectional=True, num_buckets=nb, max_distance=md)
        assert torch.equal(t5_relative_bucket(rel, True, nb, md), want), (nb, md)


@pytest.mark.parametrize("case", list(CASES))
def test_last_hidden_state_matches_transformers(case, tmp_path):
    ref = _make(tmp_path, case)
    enc = encoderkit.load(tmp_path)  # backbone only: no tokenizer in the folder
    assert enc.config.model_type == CASES[case][0][:-6].lower()
    ids, mask = _batch()
    with torch.no_grad():
        want = _encoder(ref)(input_ids=ids, attention_mask=mask).last_hidden_state
        got = enc.model(input_ids=ids, attention_mask=mask)
    assert got.shape == want.shape
    assert _max_diff(got, want, mask) <= 1e-5
    assert (got[0] - want[0]).abs().max().item() <= 1e-5  # the unpadded row at every position


def test_old_checkpoint_with_embed_tokens_only(tmp_path):
    """Old .bin files may carry the token table as encoder.embed_tokens.weight and no shared.weight."""
    ref = _make(tmp_path / "src", "t5")
    state = {k: v for k, v in ref.state_dict().items() if k != "shared.weight"}
    state["encoder.embed_tokens.weight"] = ref.shared.weight.detach().clone()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text((tmp_path / "src" / "config.json").read_text())
    torch.save(state, tmp_path / "old" / "pytorch_model.bin")
    enc = encoderkit.load(tmp_path / "old")
    ids, mask = _batch()
    with torch.no_grad():
        assert _max_diff(enc.model(input_ids=ids, attention_mask=mask),
                         ref(input_ids=ids, attention_mask=mask).last_hidden_state, mask) <= 1e-5


SENTENCE_T5_DENSE = [dict(in_features=32, out_features=24, bias=False, activation_function=torch.nn.Identity())]


@pytest.mark.parametrize("layout,case", [("current", "t5"), ("old", "t5-v1.1"), ("current", "umt5")])
def test_sentence_transformers_parity(layout, case, tmp_path):
    """sentence-t5 / GTR: T5 encoder -> mean pooling -> Dense (no bias, identity) -> Normalize."""
    from sentence_transformers import SentenceTransformer

    _make(tmp_path / "hf", case, tokenizer=True)
    folder = st_folder(tmp_path / "hf", tmp_path / "st", pooling="mean", dense=SENTENCE_T5_DENSE, normalize=True,
                       layout=layout)
    texts = sentences(12, VOCAB, seed=3, max_len=40)
    ours = encoderkit.load(folder)
    assert ours.dim == 24 and ours.normalize
    got = ours.encode(texts, batch_size=5)
    want = SentenceTransformer(str(folder), device="cpu").encode(texts, batch_size=5)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= 0.99999
    assert np.abs(got - want).max() <= 1e-5


def _unigram_tokenizer(folder, vocab_size: int = VOCAB):
    """A SentencePiece-style Unigram tokenizer.json as T5 folders ship it (Metaspace, collapse runs of spaces,
    `$A </s>`; <pad> = 0, </s> = 1, <unk> = 2), built with the tokenizers library."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    pieces = {p for c in letters for p in (c, "\u2581" + c)}
    while len(pieces) < vocab_size - 4:
        p = "".join(rng.choice(letters[:10]) for _ in range(rng.randint(2, 4)))
        pieces.add(("\u2581" if rng.random() < 0.5 else "") + p)
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(p, -rng.uniform(3.0, 10.0)) for p in sorted(pieces)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "T5Tokenizer", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
         "extra_ids": 0, "model_max_length": 512, "model_input_names": ["input_ids", "attention_mask"]}))


def _letter_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = lambda: "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 9)))  # noqa: E731
    return [" ".join(words() for _ in range(rng.randint(1, 14))) for _ in range(n)]


def test_unigram_tokenizer_json_matches_transformers(tmp_path):
    """A Unigram tokenizer.json (T5's SentencePiece model) loads and gives PreTrainedTokenizerFast's ids."""
    from encoderkit.checkpoints.tokenizer import load_tokenizer, pad_token_id

    _unigram_tokenizer(tmp_path)
    ours = load_tokenizer(tmp_path, 512)
    ref = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    texts = _letter_texts(20, seed=5) + ["Hello, World!", "  two  spaces  ", "caf\u00e9 \uff21", "x\ty\nz", ""]
    for t in texts:
        assert ours.encode(t).ids == ref(t)["input_ids"], t
    assert ours.encode("abc").ids[-1] == 1  # </s> appended, no BOS
    assert pad_token_id(tmp_path, ours, 7) == 0


def test_sentence_t5_with_unigram_tokenizer(tmp_path):
    """The whole sentence-t5 folder as published: Unigram tokenizer (T5Tokenizer class), encoder, Dense, Normalize."""
    from sentence_transformers import SentenceTransformer

    _make(tmp_path / "hf", "t5")
    _unigram_tokenizer(tmp_path / "hf")
    folder = st_folder(tmp_path / "hf", tmp_path / "st", pooling="mean", dense=SENTENCE_T5_DENSE, normalize=True,
                       layout="old")
    texts = _letter_texts(10, seed=7)
    got = encoderkit.load(folder).encode(texts, batch_size=4)
    want = SentenceTransformer(str(folder), device="cpu").encode(texts, batch_size=4)
    assert np.abs(got - want).max() <= 1e-5


def test_plain_folder_defaults_to_mean_pooling(tmp_path):
    ref = _make(tmp_path, "t5-v1.1", tokenizer=True)
    enc = encoderkit.load(tmp_path)
    assert enc.pooling == "mean" and not enc.normalize and enc.pad_id == 0
    info = enc.info()
    assert (info["family"], info["layers"], info["heads"], info["hidden_size"], info["vocab_size"]) == ("t5", 3, 4, 32, VOCAB)
    text = "w1 w2 w3 w4"
    ids = torch.tensor([enc.tokenizer.encode(text).ids])
    assert ids[0, -1].item() == 6  # </s>
    with torch.no_grad():
        want = ref(input_ids=ids).last_hidden_state.mean(1)[0].numpy()
    assert np.abs(enc.encode(text) - want).max() <= 1e-5


def test_batch_invariance_and_exact_max_length(tmp_path):
    from sentence_transformers import SentenceTransformer

    max_len = 24
    _make(tmp_path / "hf", "t5", tokenizer=True, max_len=max_len)
    folder = st_folder(tmp_path / "hf", tmp_path / "st", dense=SENTENCE_T5_DENSE, max_seq_length=max_len)
    enc = encoderkit.load(folder)
    assert enc.max_length == max_len
    short = "w3 w7 w11"
    long_texts = sentences(6, VOCAB, seed=9, min_len=15, max_len=22)
    alone = enc.encode([short])
    batched = enc.encode(long_texts + [short], batch_size=8)
    assert np.abs(alone[0] - batched[-1]).max() <= 1e-5
    exact = " ".join(f"w{i}" for i in range(max_len - 1))  # max_len - 1 words + </s> = max_len tokens
    over = exact + " w50 w51 w52"  # truncated to the same max_len tokens
    assert len(enc.tokenizer.encode(exact).ids) == max_len
    got = enc.encode([exact, over, short])
    want = SentenceTransformer(str(folder), device="cpu").encode([exact, over, short])
    assert np.abs(got - want).max() <= 1e-5
    assert np.abs(got[0] - got[1]).max() <= 1e-6


@pytest.mark.parametrize("case", ["t5-v1.1", "t5-full", "umt5"])
def test_save_round_trip(case, tmp_path):
    """Encoder.save writes a folder that T5EncoderModel (MT5/UMT5 likewise) and SentenceTransformer load."""
    from sentence_transformers import SentenceTransformer

    ref = _make(tmp_path / "hf", case, tokenizer=True)
    enc = encoderkit.load(st_folder(tmp_path / "hf", tmp_path / "st", dense=SENTENCE_T5_DENSE))
    enc.save(tmp_path / "out")
    cls = getattr(transformers, CASES[case][1].replace("ForConditionalGeneration", "EncoderModel"))
    again = cls.from_pretrained(tmp_path / "out").eval()
    ids, mask = _batch()
    with torch.no_grad():
        a = _encoder(ref)(input_ids=ids, attention_mask=mask).last_hidden_state
        b = again(input_ids=ids, attention_mask=mask).last_hidden_state
    assert _max_diff(a, b, mask) == 0.0
    texts = sentences(6, VOCAB, seed=4, max_len=30)
    want = enc.encode(texts)
    assert np.abs(SentenceTransformer(str(tmp_path / "out"), device="cpu").encode(texts) - want).max() <= 1e-5
    assert np.abs(encoderkit.load(tmp_path / "out").encode(texts) - want).max() <= 1e-6


@pytest.mark.parametrize("case", ["t5", "t5-v1.1", "mt5", "umt5"])
def test_to_hf_config_rebuilds_the_network(case, tmp_path):
    """A config.json written by t5_to_hf_config (no original config to copy) builds the same encoder in transformers."""
    from encoderkit.checkpoints.registry import family_for
    from encoderkit.checkpoints.weights import save_safetensors

    ref = _make(tmp_path / "src", case)
    enc = encoderkit.load(tmp_path / "src")
    fam = family_for(enc.config.model_type)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.json").write_text(json.dumps(fam.to_hf_config(enc.config)))
    save_safetensors(export_mapped(enc.model, fam.key_map(enc.config)), tmp_path / "out" / "model.safetensors")
    again = getattr(transformers, CASES[case][1]).from_pretrained(tmp_path / "out").eval()
    ids, mask = _batch()
    with torch.no_grad():
        assert _max_diff(again(input_ids=ids, attention_mask=mask).last_hidden_state,
                         ref(input_ids=ids, attention_mask=mask).last_hidden_state, mask) == 0.0


def _edit_config(folder, **fields):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(fields)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_shape_mismatch_names_file_and_tensor(tmp_path):
    _make(tmp_path / "relu", "t5")
    _edit_config(tmp_path / "relu", d_ff=41)
    with pytest.raises(CheckpointError) as e:
        encoderkit.load(tmp_path / "relu")
    msg = str(e.value)
    assert "\n" not in msg and "model.safetensors" in msg
    assert "encoder.block.0.layer.1.DenseReluDense.wi.weight" in msg and "(41, 32)" in msg
    _make(tmp_path / "gated", "t5-v1.1")
    _edit_config(tmp_path / "gated", d_kv=8)
    with pytest.raises(CheckpointError, match=r"encoder\.block\.0\.layer\.0\.SelfAttention\.q\.weight.*\(96, 32\)"):
        encoderkit.load(tmp_path / "gated")


def test_ffn_kind_mismatch_and_missing_bias_table(tmp_path):
    """A gated config over a relu checkpoint names the absent wi_0; a file without the bias table names it."""
    _make(tmp_path, "t5")
    _edit_config(tmp_path, feed_forward_proj="gated-gelu")
    with pytest.raises(CheckpointError, match=r"DenseReluDense\.wi_0\.weight' is missing"):
        encoderkit.load(tmp_path)
    _edit_config(tmp_path, feed_forward_proj="relu", model_type="umt5")  # UMT5 wants a table in every layer
    with pytest.raises(CheckpointError, match=r"block\.1\.layer\.0\.SelfAttention\.relative_attention_bias"):
        encoderkit.load(tmp_path)
    _edit_config(tmp_path, model_type="t5", feed_forward_proj="gated-gelu-x")
    with pytest.raises(CheckpointError, match="feed_forward_proj"):
        encoderkit.load(tmp_path)
