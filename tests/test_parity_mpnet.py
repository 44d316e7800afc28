"""Parity of MPNet (all-mpnet-base-v2, multi-qa-mpnet-base-*): tiny random checkpoints written by `transformers`
give the same last hidden states (max abs diff <= 1e-5, fp32), and sentence-transformers folders around them
the same sentence vectors, in both folder layouts."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

import encoderkit
from encoderkit.checkpoints.weights import CheckpointError
from tiny_checkpoints import sentences, st_folder, word, write_tokenizer

transformers = pytest.importorskip("transformers")

VOCAB = 150
MAX_POS = 162  # as in mpnet-base (514): positions start at pad + 1 = 2, so the longest input is MAX_POS - 2
MAX_LEN = MAX_POS - 2  # 160 > 128: an input this long reaches MPNet's last (clamped) relative bucket
SMALL = dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=80,
             max_position_embeddings=MAX_POS, layer_norm_eps=1e-5, relative_attention_num_buckets=32, pad_token_id=1)


def _perturb(model) -> None:
    """Non-trivial LayerNorm and relative-bias parameters, so a mis-mapped norm or bias table cannot hide."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "LayerNorm" in n or "relative_attention_bias" in n:
                p.add_(torch.randn_like(p) * 0.3)


def _reference(tmp_path, cls=None):
    torch.manual_seed(0)
    ref = (cls or transformers.MPNetModel)(transformers.MPNetConfig(**SMALL)).eval()
    _perturb(ref)
    ref.save_pretrained(tmp_path)
    return ref


def _batch(T: int = 140):
    """A right-padded batch padded with MPNet's pad id 1; the longest row spans offsets beyond 128."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(12, VOCAB, (3, T), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 37:] = 0
    mask[2, 6:] = 0
    ids[mask == 0] = 1
    return ids, mask


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny MPNetModel folder with an MPNet-style tokenizer (<s> .. </s>, pad <pad>)."""
    d = tmp_path_factory.mktemp("mpnet")
    _reference(d)
    write_tokenizer(d, VOCAB, "roberta", pad="<pad>", unk="<unk>", model_max_length=MAX_LEN)
    return d


@pytest.fixture(scope="module", params=["current", "old"])
def st_dir(request, model_dir, tmp_path_factory):
    """all-mpnet-base-v2's pipeline: Transformer -> mean Pooling -> Normalize, in either folder layout."""
    return st_folder(model_dir, tmp_path_factory.mktemp(f"st-{request.param}"), pooling="mean", normalize=True,
                     max_seq_length=MAX_LEN, layout=request.param)


@pytest.fixture(scope="module")
def st_model(st_dir):
    """The reference: sentence-transformers' own pipeline on the same folder."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(st_dir), device="cpu")


def test_last_hidden_state_matches_transformers(tmp_path):
    ref = _reference(tmp_path)
    enc = encoderkit.load(tmp_path)
    assert enc.tokenizer is None and enc.pooling == "mean" and enc.max_length == MAX_LEN
    ids, mask = _batch()
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        got = enc.model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
    assert got.shape == want.shape
    assert _max_diff(got[mask.bool()], want[mask.bool()]) <= 1e-5
    assert _max_diff(got[0], want[0]) <= 1e-5  # the unpadded row at every position
    with torch.no_grad():  # no mask at all: the relative bias alone
        assert _max_diff(enc.model(input_ids=ids[:1]), ref(input_ids=ids[:1]).last_hidden_state) <= 1e-5


def test_relative_bias_is_used(tmp_path):
    """Zeroing the relative bias table changes the output: the parity above depends on it being mapped."""
    _reference(tmp_path)
    enc = encoderkit.load(tmp_path)
    ids, mask = _batch(40)
    with torch.no_grad():
        before = enc.model(input_ids=ids, attention_mask=mask)
        enc.model.relative_bias.bias.weight.zero_()
        after = enc.model(input_ids=ids, attention_mask=mask)
    assert _max_diff(before, after) > 1e-2


@pytest.mark.parametrize("cls", ["MPNetForMaskedLM", "MPNetForSequenceClassification"])
def test_task_checkpoint_prefix_is_found(cls, tmp_path):
    """Task models store the encoder under 'mpnet.'; the loader finds it through the anchor and skips the head."""
    ref = _reference(tmp_path, getattr(transformers, cls))
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert "mpnet.embeddings.word_embeddings.weight" in f.keys()
    enc = encoderkit.load(tmp_path)
    assert enc.extra_tensors == {}
    ids, mask = _batch()
    with torch.no_grad():
        want = ref.mpnet(input_ids=ids, attention_mask=mask).last_hidden_state
        got = enc.model(input_ids=ids, attention_mask=mask)
    assert _max_diff(got[mask.bool()], want[mask.bool()]) <= 1e-5


def test_sentence_transformers_parity(st_dir, st_model):
    texts = sentences(12, VOCAB, seed=3, max_len=40) + [" ".join(word(i % 100) for i in range(200))]  # truncated
    want = st_model.encode(texts, convert_to_numpy=True)
    enc = encoderkit.load(st_dir)
    assert enc.pooling == "mean" and enc.normalize and enc.max_length == MAX_LEN
    got = enc.encode(texts)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= 0.99999
    assert np.abs(got - want).max() <= 1e-5


def test_batch_invariance_and_exact_max_length(st_dir, st_model):
    enc = encoderkit.load(st_dir)
    short = "w3 w14 w15 w92"
    long_texts = sentences(5, VOCAB, seed=4, min_len=100, max_len=150)
    alone = enc.encode([short])[0]
    in_batch = enc.encode(long_texts[:2] + [short] + long_texts[2:], batch_size=6)[2]
    assert np.abs(alone - in_batch).max() <= 1e-5
    exact = " ".join(word(i % 120) for i in range(MAX_LEN - 2))  # + <s> and </s> = exactly MAX_LEN tokens
    assert len(enc.tokenize([exact])[0].ids) == MAX_LEN
    longer = exact + " w1 w2 w3"  # truncated to the same MAX_LEN tokens (the last one being </s>)
    got = enc.encode([exact, longer, short])
    want = st_model.encode([exact, longer, short], convert_to_numpy=True)
    assert np.abs(got - want).max() <= 1e-5
    assert np.abs(got[0] - got[1]).max() <= 1e-6


def test_save_round_trip(st_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    enc = encoderkit.load(st_dir)
    texts = sentences(6, VOCAB, seed=5, max_len=30)
    before = enc.encode(texts)
    out = enc.save(tmp_path / "out")
    st = SentenceTransformer(str(out), device="cpu")
    assert np.abs(st.encode(texts, convert_to_numpy=True) - before).max() <= 1e-5
    assert np.abs(encoderkit.load(out).encode(texts) - before).max() <= 1e-6
    ids, mask = _batch()  # the written weights load in AutoModel, pooler kept
    src = transformers.AutoModel.from_pretrained(enc.source).eval()
    again = transformers.AutoModel.from_pretrained(out).eval()
    with torch.no_grad():
        a, b = src(input_ids=ids, attention_mask=mask), again(input_ids=ids, attention_mask=mask)
    assert _max_diff(a.last_hidden_state[mask.bool()], b.last_hidden_state[mask.bool()]) <= 1e-6
    assert _max_diff(a.pooler_output, b.pooler_output) <= 1e-6


def test_to_hf_config_rebuilds_the_same_network():
    """A model made without a config.json (create_model) is written with to_hf_config; transformers rebuilds it."""
    from encoderkit.checkpoints.registry import create_model, family_for
    from encoderkit.checkpoints.weights import export_mapped

    torch.manual_seed(2)
    ours = create_model("mpnet", **SMALL).eval()
    fam = family_for("mpnet")
    hf = fam.to_hf_config(ours.config)
    theirs = transformers.AutoModel.from_config(transformers.AutoConfig.for_model(**hf)).eval()
    assert type(theirs).__name__ == "MPNetModel"
    missing, unexpected = theirs.load_state_dict(export_mapped(ours, fam.key_map(ours.config)), strict=False)
    assert not unexpected and all(k.startswith("pooler.") or k.endswith("position_ids") for k in missing)
    ids, mask = _batch()
    with torch.no_grad():
        a, b = ours(input_ids=ids, attention_mask=mask), theirs(input_ids=ids, attention_mask=mask).last_hidden_state
    assert _max_diff(a[mask.bool()], b[mask.bool()]) <= 1e-5


def test_shape_mismatch_names_the_tensor(tmp_path):
    _reference(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["intermediate_size"] = 81
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as e:
        encoderkit.load(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "model.safetensors" in msg and "(81, 48)" in msg
    assert "encoder.layer.0.intermediate.dense.weight" in msg


def test_missing_relative_bias_and_unsupported_buckets(tmp_path):
    from safetensors.torch import load_file, save_file

    _reference(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "relative_attention_num_buckets": 64}))
    with pytest.raises(CheckpointError, match="relative_attention_num_buckets=64"):
        encoderkit.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    st = load_file(str(tmp_path / "model.safetensors"))
    del st["encoder.relative_attention_bias.weight"]
    save_file(st, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"encoder\.relative_attention_bias\.weight' is missing"):
        encoderkit.load(tmp_path)
