"""ModernBERT parity: tiny random checkpoints written by `transformers` (4 layers, global attention on layers 0
and 3, a local window of 8 on the others, different rotary thetas) load into encoderkit and give the same hidden
states, and the same sentence vectors as sentence-transformers, on inputs longer than the window."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import encoderkit
from encoderkit.checkpoints.weights import CheckpointError, export_mapped
from tiny_checkpoints import sentences, st_folder, write_tokenizer

transformers = pytest.importorskip("transformers")

VOCAB, MAX_LEN = 120, 64
BASE = dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=4, num_attention_heads=4, intermediate_size=40,
            local_attention=8, global_attn_every_n_layers=3, global_rope_theta=1000.0, local_rope_theta=50.0,
            max_position_embeddings=MAX_LEN, pad_token_id=0, bos_token_id=2, cls_token_id=2, eos_token_id=3,
            sep_token_id=3, initializer_range=0.3)  # large weights: sharp attention, so positions matter
# what the released checkpoints use (no biases), and every bias switched on so the optional tensors are mapped too
VARIANTS = {"released": {}, "biases": dict(attention_bias=True, mlp_bias=True, norm_bias=True)}


def _make(tmp_path, lm: bool = False, tokenizer: bool = False, **over):
    torch.manual_seed(0)
    cfg = transformers.ModernBertConfig(**{**BASE, **over})
    ref = (transformers.ModernBertForMaskedLM if lm else transformers.ModernBertModel)(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights and biases, so a mis-mapped norm or bias cannot hide
        for n, p in ref.named_parameters():
            if "norm" in n or n.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    ref.save_pretrained(tmp_path)
    if tokenizer:
        write_tokenizer(tmp_path, VOCAB, "bert", model_max_length=MAX_LEN,
                        extra_config={"model_input_names": ["input_ids", "attention_mask"]})
    return ref


def _batch(T: int = 30):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (3, T), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    mask[2, 6:] = 0
    ids[mask == 0] = 0
    return ids, mask


def _max_diff(got: torch.Tensor, want: torch.Tensor, mask: torch.Tensor) -> float:
    return (got - want)[mask.bool()].abs().max().item()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_last_hidden_state_matches_transformers(variant, tmp_path):
    ref = _make(tmp_path, **VARIANTS[variant])
    enc = encoderkit.load(tmp_path)
    assert enc.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    ids, mask = _batch()
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        got = enc.model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
        assert got.shape == want.shape
        assert _max_diff(got, want, mask) <= 1e-5
        # the inputs are longer than the window and attention is sharp: the window and both thetas matter
        for field, value in (("local_attention", 64), ("local_rope_theta", 1000.0), ("global_rope_theta", 50.0)):
            setattr(enc.config, field, value)
            other = type(enc.model)(enc.config).eval()
            other.load_state_dict(enc.model.state_dict())
            assert _max_diff(other(input_ids=ids, attention_mask=mask), want, mask) > 1e-2, field
            setattr(enc.config, field, BASE[field])


def test_2024_config_fields_load(tmp_path):
    """Configs on the Hub predate layer_types / rope_parameters: global_attn_every_n_layers and
    global/local_rope_theta give the same network."""
    ref = _make(tmp_path, num_hidden_layers=5, global_attn_every_n_layers=2)
    c = json.loads((tmp_path / "config.json").read_text())
    for k in ("layer_types", "rope_parameters"):
        c.pop(k)
    c.update(global_attn_every_n_layers=2, global_rope_theta=1000.0, local_rope_theta=50.0)
    (tmp_path / "config.json").write_text(json.dumps(c))
    enc = encoderkit.load(tmp_path)
    assert enc.config.layer_types[:3] == ["full_attention", "sliding_attention", "full_attention"]
    ids, mask = _batch()
    with torch.no_grad():
        assert _max_diff(enc.model(input_ids=ids, attention_mask=mask),
                         ref(input_ids=ids, attention_mask=mask).last_hidden_state, mask) <= 1e-5


def test_masked_lm_checkpoint_loads_backbone(tmp_path):
    """ModernBERT-base ships as ModernBertForMaskedLM: the encoder sits under "model.", the head is skipped."""
    ref = _make(tmp_path, lm=True)
    enc = encoderkit.load(tmp_path)
    ids, mask = _batch()
    with torch.no_grad():
        assert _max_diff(enc.model(input_ids=ids, attention_mask=mask),
                         ref.model(input_ids=ids, attention_mask=mask).last_hidden_state, mask) <= 1e-5


def _assert_same_vectors(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= 0.99999 and np.abs(a - b).max() <= 1e-5


@pytest.mark.parametrize("layout", ["current", "old"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])  # gte-modernbert-base: cls; modernbert-embed-base: mean
def test_sentence_transformers_parity(layout, pooling, tmp_path):
    from sentence_transformers import SentenceTransformer

    _make(tmp_path / "hf", tokenizer=True)
    folder = st_folder(tmp_path / "hf", tmp_path / "st", pooling=pooling, layout=layout)
    texts = sentences(12, VOCAB, seed=3, min_len=1, max_len=40)  # many longer than the local window
    ours = encoderkit.load(folder)
    assert ours.pooling == pooling and ours.normalize
    want = SentenceTransformer(str(folder), device="cpu").encode(texts, batch_size=5)
    _assert_same_vectors(ours.encode(texts, batch_size=5), want)


def test_plain_folder_defaults_to_mean_pooling(tmp_path):
    from sentence_transformers import SentenceTransformer

    _make(tmp_path, tokenizer=True)
    enc = encoderkit.load(tmp_path)
    assert enc.pooling == "mean"
    texts = sentences(4, VOCAB, seed=5, max_len=30)
    _assert_same_vectors(enc.encode(texts), SentenceTransformer(str(tmp_path), device="cpu").encode(texts))


def test_batch_invariance_and_exact_max_length(tmp_path):
    ref = _make(tmp_path, tokenizer=True)
    enc = encoderkit.load(tmp_path)
    assert enc.max_length == MAX_LEN
    short = "w1 w2 w3"
    longs = sentences(6, VOCAB, seed=7, min_len=40, max_len=60)
    alone = enc.encode([short])
    batched = enc.encode(longs + [short], batch_size=8)
    assert np.abs(alone[0] - batched[-1]).max() <= 1e-5
    # a text that fills the model's limit exactly ([CLS] + 62 words + [SEP] = 64 tokens), and a longer one truncated
    exact = " ".join(f"w{i % 90}" for i in range(MAX_LEN - 2))
    toks = enc.encode([exact], output="tokens")[0]
    assert toks.shape == (MAX_LEN, 48)
    ids = torch.tensor([enc.tokenizer.encode(exact).ids])
    assert ids.shape[1] == MAX_LEN
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0].numpy()
    assert np.abs(toks - want).max() <= 1e-5
    over = enc.encode([exact + " w5 w6 w7"], output="tokens")[0]
    assert over.shape == (MAX_LEN, 48)


def test_save_round_trip(tmp_path):
    from sentence_transformers import SentenceTransformer

    ref = _make(tmp_path / "hf", tokenizer=True)
    folder = st_folder(tmp_path / "hf", tmp_path / "st", pooling="cls", layout="old")
    enc = encoderkit.load(folder)
    out = enc.save(tmp_path / "out")
    again = transformers.AutoModel.from_pretrained(out).eval()
    ids, mask = _batch()
    with torch.no_grad():
        assert _max_diff(again(input_ids=ids, attention_mask=mask).last_hidden_state,
                         ref(input_ids=ids, attention_mask=mask).last_hidden_state, mask) <= 1e-6
    texts = sentences(6, VOCAB, seed=9, max_len=40)
    mine = enc.encode(texts)
    _assert_same_vectors(SentenceTransformer(str(out), device="cpu").encode(texts), mine)
    _assert_same_vectors(encoderkit.load(out).encode(texts), mine)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_to_hf_config_rebuilds_the_network(variant, tmp_path):
    """Our config -> config.json -> transformers builds a network that takes our exported tensors and agrees."""
    _make(tmp_path, num_hidden_layers=5, global_attn_every_n_layers=2, **VARIANTS[variant])
    enc = encoderkit.load(tmp_path)
    hf = enc.family.to_hf_config(enc.config)
    assert hf["global_attn_every_n_layers"] == 2
    cfg = transformers.AutoConfig.for_model(**hf)
    rebuilt = transformers.AutoModel.from_config(cfg).eval()
    missing, unexpected = rebuilt.load_state_dict(export_mapped(enc.model, enc.family.key_map(enc.config)), strict=False)
    assert not unexpected and not [k for k in missing if "inv_freq" not in k]
    ids, mask = _batch()
    with torch.no_grad():
        assert _max_diff(rebuilt(input_ids=ids, attention_mask=mask).last_hidden_state,
                         enc.model(input_ids=ids, attention_mask=mask), mask) <= 1e-5


def test_shape_mismatch_names_file_and_tensor(tmp_path):
    _make(tmp_path)
    c = json.loads((tmp_path / "config.json").read_text())
    c["intermediate_size"] = 41
    (tmp_path / "config.json").write_text(json.dumps(c))
    with pytest.raises(CheckpointError) as e:
        encoderkit.load(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "model.safetensors" in msg and "layers.0.mlp.Wi.weight" in msg and "(82, 48)" in msg


def test_bias_flag_mismatch_names_missing_tensor(tmp_path):
    _make(tmp_path)  # written without biases; a config that claims them must fail on the first absent bias
    c = json.loads((tmp_path / "config.json").read_text())
    c["attention_bias"] = True
    (tmp_path / "config.json").write_text(json.dumps(c))
    with pytest.raises(CheckpointError, match=r"layers\.0\.attn\.Wqkv\.bias.*missing"):
        encoderkit.load(tmp_path)
