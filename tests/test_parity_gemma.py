"""Gemma parity: tiny random Gemma 3 text checkpoints written by `transformers` (6 layers alternating sliding /
full attention, a sliding window of 4, grouped-query attention, q/k norms, linear rope scaling on full layers),
bidirectional as google/embeddinggemma-300m and causal, load into encoderkit and give the same hidden states on
texts longer than the window; the embeddinggemma sentence-transformers pipeline (mean -> Dense 48->96 ->
Dense 96->48 -> Normalize, with its prompts) gives the same vectors as sentence-transformers; Gemma 2 and 1 too."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import encoderkit
from encoderkit.checkpoints.loader import save_transformer
from encoderkit.checkpoints.registry import family_for
from encoderkit.checkpoints.weights import CheckpointError
from tiny_checkpoints import SPECIALS, sentences, st_folder, write_tokenizer

transformers = pytest.importorskip("transformers")

VOCAB, MAX_LEN, H = 120, 64, 48
PAD, BOS, EOS = SPECIALS.index("<pad>"), SPECIALS.index("<bos>"), SPECIALS.index("<eos>")
LAYERS = ["sliding_attention", "sliding_attention", "full_attention"] * 2
BASE = dict(vocab_size=VOCAB, hidden_size=H, intermediate_size=40, num_hidden_layers=6, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24, sliding_window=4, layer_types=LAYERS,
            max_position_embeddings=MAX_LEN, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
            rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
# embeddinggemma-300m's sentence-transformers modules after the mean pooling, and its prompts
DENSE = [dict(in_features=H, out_features=2 * H, bias=False, activation_function=torch.nn.Identity()),
         dict(in_features=2 * H, out_features=H, bias=False, activation_function=torch.nn.Identity())]
PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: ",
           "Clustering": "task: clustering | query: "}


def _perturb_norms(model: torch.nn.Module) -> None:
    """Norm weights away from zero (Gemma stores g of (1 + g)), so a mis-mapped norm cannot hide."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(torch.randn_like(p) * 0.3)


def _make(tmp_path, bidirectional: bool = True, tokenizer: bool = True, **over):
    torch.manual_seed(0)
    cfg = transformers.Gemma3TextConfig(**{**BASE, "use_bidirectional_attention": bidirectional, **over})
    ref = transformers.Gemma3TextModel(cfg).eval()
    _perturb_norms(ref)
    ref.save_pretrained(tmp_path)
    if tokenizer:
        write_tokenizer(tmp_path, VOCAB, "bos_eos", pad="<pad>", unk="<unk>", model_max_length=MAX_LEN)
    return ref


def _batch(T: int = 19):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(len(SPECIALS), VOCAB, (3, T), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 13:] = 0
    mask[2, 6:] = 0
    ids[mask == 0] = PAD
    return ids, mask


def _max_diff(got: torch.Tensor, want: torch.Tensor, mask: torch.Tensor) -> float:
    return (got - want)[mask.bool()].abs().max().item()


def _assert_same_vectors(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= 0.99999 and np.abs(a - b).max() <= 1e-5


@pytest.mark.parametrize("bidirectional", [True, False], ids=["bidirectional", "causal"])
def test_last_hidden_state_matches_transformers(bidirectional, tmp_path):
    ref = _make(tmp_path, bidirectional, tokenizer=False)
    enc = encoderkit.load(tmp_path)
    cfg = enc.config
    assert (cfg.bidirectional, cfg.layer_types, cfg.num_kv_heads, cfg.rope_scaling) == (bidirectional, LAYERS, 2, 4.0)
    # embeddinggemma's window: |i - j| <= 4 // 2; causal Gemma: i - 4 < j <= i
    assert cfg.window == ((2, 2) if bidirectional else (3, 0))
    ids, mask = _batch()
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        got = enc.model(input_ids=ids, attention_mask=mask)
        assert _max_diff(got, want, mask) <= 1e-5
        # a causal model's real tokens never see the padding after them, whatever the window
        if not bidirectional:
            assert (got[0, :5] - enc.model(input_ids=ids[:1, :5])[0]).abs().max() <= 1e-5


def test_published_config_fields(tmp_path):
    """embeddinggemma-300m's config.json as published (transformers 4 names: rope_theta, rope_local_base_freq,
    rope_scaling null, sliding_window_pattern) loads the same network in both libraries."""
    _make(tmp_path, tokenizer=False)
    c = json.loads((tmp_path / "config.json").read_text())
    c.pop("rope_parameters")
    c.update(rope_theta=1e6, rope_local_base_freq=1e4, rope_scaling=None, sliding_window_pattern=3)
    c.pop("layer_types")
    (tmp_path / "config.json").write_text(json.dumps(c))
    ref = transformers.AutoModel.from_pretrained(tmp_path).eval()
    enc = encoderkit.load(tmp_path)
    assert enc.config.layer_types == LAYERS and enc.config.rope_scaling == 1.0
    ids, mask = _batch()
    with torch.no_grad():
        assert _max_diff(enc.model(input_ids=ids, attention_mask=mask),
                         ref(input_ids=ids, attention_mask=mask).last_hidden_state, mask) <= 1e-5


def test_causal_lm_file_and_gemma1(tmp_path):
    """A GemmaForCausalLM file (Gemma 1: two norms per layer, no q/k norm, multi-query attention, logits scaled by
    head_dim^-1/2, no sliding layers) stores the backbone under "model."; the loader finds it and skips lm_head."""
    torch.manual_seed(0)
    cfg = transformers.GemmaConfig(vocab_size=VOCAB, hidden_size=H, intermediate_size=40, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=1, head_dim=16, hidden_act="gelu",
                                   max_position_embeddings=MAX_LEN, pad_token_id=PAD)
    ref = transformers.GemmaForCausalLM(cfg).eval()
    _perturb_norms(ref)
    ref.save_pretrained(tmp_path)
    enc = encoderkit.load(tmp_path)
    assert enc.pooling == "last" and not enc.config.bidirectional
    ids, mask = _batch()
    with torch.no_grad():
        assert _max_diff(enc.model(input_ids=ids, attention_mask=mask),
                         ref.model(input_ids=ids, attention_mask=mask).last_hidden_state, mask) <= 1e-5


def test_gemma2_softcapped_logits(tmp_path):
    """Gemma 2 (BAAI/bge-multilingual-gemma2): causal, even layers sliding, one rotary theta, no q/k norms, attention
    logits soft-capped at 50 (a low cap here, so capping changes the result); our config writes back a Gemma2Model."""
    torch.manual_seed(0)
    cfg = transformers.Gemma2Config(vocab_size=VOCAB, hidden_size=H, intermediate_size=40, num_hidden_layers=4,
                                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
                                    sliding_window=4, attn_logit_softcapping=2.0, max_position_embeddings=MAX_LEN,
                                    pad_token_id=PAD)
    ref = transformers.Gemma2Model(cfg).eval()
    _perturb_norms(ref)
    with torch.no_grad():  # larger q/k weights: logits well beyond the cap
        for layer in ref.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
    ref.save_pretrained(tmp_path / "src")
    enc = encoderkit.load(tmp_path / "src")
    c = enc.config
    assert (c.attn_logit_softcapping, c.window, c.rope_local_theta) == (2.0, (3, 0), c.rope_theta)
    assert c.layer_types == ["sliding_attention", "full_attention"] * 2
    ids, mask = _batch()
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        assert _max_diff(enc.model(input_ids=ids, attention_mask=mask), want, mask) <= 1e-5
        save_transformer(tmp_path / "out", enc.model, family_for("gemma2"), enc.config, None, None, None)
        again = transformers.AutoModel.from_pretrained(tmp_path / "out").eval()
        assert _max_diff(again(input_ids=ids, attention_mask=mask).last_hidden_state, want, mask) <= 1e-6
        for layer in enc.model.layers:  # the cap matters on these inputs: practically uncapped, the states differ
            layer.attn.softcap = 1e9
        assert _max_diff(enc.model(input_ids=ids, attention_mask=mask), want, mask) > 1e-3


@pytest.mark.parametrize("layout", ["current", "old"])
def test_sentence_transformers_parity_with_dense_and_prompts(layout, tmp_path):
    from sentence_transformers import SentenceTransformer

    _make(tmp_path / "hf")
    folder = st_folder(tmp_path / "hf", tmp_path / "st", pooling="mean", dense=DENSE, prompts=PROMPTS, layout=layout)
    texts = sentences(12, VOCAB, seed=3, min_len=1, max_len=30)  # most longer than the window of 4
    ours = encoderkit.load(folder)
    assert ours.pooling == "mean" and ours.normalize and ours.dim == H and len(ours.dense) == 2
    st = SentenceTransformer(str(folder), device="cpu")
    _assert_same_vectors(ours.encode(texts, batch_size=5), st.encode(texts, batch_size=5))
    _assert_same_vectors(ours.encode(texts, prompt_name="query", batch_size=5),
                         st.encode(texts, prompt_name="query", batch_size=5))
    # the prompt changes the vector (it is not dropped on either side)
    assert np.abs(ours.encode(texts[:2], prompt_name="query") - ours.encode(texts[:2])).max() > 1e-3


def test_batch_invariance_and_exact_max_length(tmp_path):
    ref = _make(tmp_path)
    enc = encoderkit.load(tmp_path)
    assert enc.max_length == MAX_LEN and enc.pad_id == PAD and enc.pooling == "mean"
    short = "w1 w2 w3"
    longs = sentences(6, VOCAB, seed=7, min_len=40, max_len=60)
    alone = enc.encode([short])
    batched = enc.encode(longs + [short], batch_size=8)
    assert np.abs(alone[0] - batched[-1]).max() <= 1e-5
    # a text that fills the limit exactly (<bos> + 62 words + <eos> = 64 tokens), and a longer one truncated
    exact = " ".join(f"w{i % 90}" for i in range(MAX_LEN - 2))
    ids = torch.tensor([enc.tokenizer.encode(exact).ids])
    assert ids.shape[1] == MAX_LEN and ids[0, 0] == BOS and ids[0, -1] == EOS
    toks = enc.encode([exact], output="tokens")[0]
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0].numpy()
    assert toks.shape == (MAX_LEN, H) and np.abs(toks - want).max() <= 1e-5
    assert enc.encode([exact + " w5 w6 w7"], output="tokens")[0].shape == (MAX_LEN, H)


def test_save_round_trip(tmp_path):
    from sentence_transformers import SentenceTransformer

    ref = _make(tmp_path / "hf")
    folder = st_folder(tmp_path / "hf", tmp_path / "st", pooling="mean", dense=DENSE, prompts=PROMPTS, layout="old")
    enc = encoderkit.load(folder)
    out = enc.save(tmp_path / "out")
    again = transformers.AutoModel.from_pretrained(out).eval()  # q, k, v of unequal sizes (GQA) split back right
    ids, mask = _batch()
    with torch.no_grad():
        assert _max_diff(again(input_ids=ids, attention_mask=mask).last_hidden_state,
                         ref(input_ids=ids, attention_mask=mask).last_hidden_state, mask) <= 1e-6
    texts = sentences(6, VOCAB, seed=9, max_len=30)
    mine = enc.encode(texts, prompt_name="query")
    _assert_same_vectors(SentenceTransformer(str(out), device="cpu").encode(texts, prompt_name="query"), mine)
    _assert_same_vectors(encoderkit.load(out).encode(texts, prompt_name="query"), mine)


@pytest.mark.parametrize("bidirectional", [True, False], ids=["bidirectional", "causal"])
def test_to_hf_config_rebuilds_the_network(bidirectional, tmp_path):
    """Our config -> config.json -> transformers builds a network that takes our exported tensors and agrees."""
    ref = _make(tmp_path / "src", bidirectional, tokenizer=False)
    enc = encoderkit.load(tmp_path / "src")
    fam = family_for("gemma3_text")
    save_transformer(tmp_path / "out", enc.model, fam, enc.config, None, None, None)
    again = transformers.AutoModel.from_pretrained(tmp_path / "out").eval()
    assert again.config.sliding_window == ref.config.sliding_window
    ids, mask = _batch()
    with torch.no_grad():
        assert _max_diff(again(input_ids=ids, attention_mask=mask).last_hidden_state,
                         ref(input_ids=ids, attention_mask=mask).last_hidden_state, mask) <= 1e-6


def test_shape_mismatch_is_one_line_naming_the_tensor(tmp_path):
    _make(tmp_path, tokenizer=False)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["intermediate_size"] = 41
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as e:
        encoderkit.load(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "model.safetensors" in msg and "layers.0.mlp.gate_proj.weight" in msg
    assert "(80, 48)" in msg and "(82, 48)" in msg


def test_unsupported_rope_type_is_refused(tmp_path):
    _make(tmp_path, tokenizer=False)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["rope_parameters"]["full_attention"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="rope_type 'yarn' for full_attention"):
        encoderkit.load(tmp_path)
