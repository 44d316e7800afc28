"""Decoder embedders (llama, mistral, qwen2, qwen3): tiny random checkpoints written by `transformers` load into
models/decoder.py and give the same hidden states (grouped-query attention, Qwen3's head_dim != H / heads and
q/k norms, Qwen2's q/k/v biases, Mistral's sliding window, gte-Qwen2's is_causal: false), the same token ids as
transformers' AutoTokenizer, and the same last-token vectors as sentence-transformers, which pads on the LEFT
(Qwen3-Embedding's tokenizer_config) while encoderkit pads on the right."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import encoderkit
from encoderkit.checkpoints.weights import CheckpointError
from tiny_checkpoints import sentences, st_folder, write_tokenizer

transformers = pytest.importorskip("transformers")

VOCAB, MAX_LEN = 120, 64
BASE = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=80, max_position_embeddings=MAX_LEN, rms_norm_eps=1e-6, pad_token_id=10,
            initializer_range=0.2)  # large weights: sharp attention, so masks and positions matter
# name -> (config class, model class, the options the family's real checkpoints use)
CASES = {
    "qwen3": ("Qwen3Config", "Qwen3Model", dict(head_dim=24,
                                                rope_parameters={"rope_type": "default", "rope_theta": 1e6})),
    "qwen3-sliding": ("Qwen3Config", "Qwen3Model", dict(head_dim=24, use_sliding_window=True, sliding_window=6,
                                                        max_window_layers=1)),
    "qwen2": ("Qwen2Config", "Qwen2Model", dict(rope_parameters={"rope_type": "default", "rope_theta": 1e6})),
    "gte-qwen2": ("Qwen2Config", "Qwen2Model", dict(is_causal=False)),  # gte-Qwen2-*-instruct: bidirectional
    "mistral": ("MistralConfig", "MistralModel", dict(sliding_window=6)),
    "mistral-bidirectional": ("MistralConfig", "MistralModel", dict(sliding_window=6, is_causal=False)),
    "llama": ("LlamaConfig", "LlamaModel", dict(attention_bias=True, mlp_bias=True, head_dim=8, rope_parameters={
        "rope_type": "linear", "rope_theta": 500.0, "factor": 2.0})),
    # Llama 3.1's banded RoPE scaling; a small original context puts one frequency in each band (kept, blended, scaled)
    "llama3": ("LlamaConfig", "LlamaModel", dict(head_dim=8, rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 512})),
}
QWEN3_PROMPTS = {  # Qwen3-Embedding's config_sentence_transformers.json
    "query": "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
    "document": ""}


def _make(name: str, folder, lm: bool = False, **over):
    cfg_name, model_name, extra = CASES[name]
    torch.manual_seed(0)
    cfg = getattr(transformers, cfg_name)(**{**BASE, **extra, **over})
    cls = getattr(transformers, model_name.replace("Model", "ForCausalLM") if lm else model_name)
    ref = cls(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights and biases, so a mis-mapped norm or bias cannot hide
        for n, p in ref.named_parameters():
            if "norm" in n or n.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.3)
    ref.save_pretrained(folder)
    return ref


def _batch(T: int = 20, left: bool = False):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(12, VOCAB, (3, T), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 13:] = 0
    mask[2, 4:] = 0
    if left:
        mask = mask.flip(1)
    ids[mask == 0] = BASE["pad_token_id"]
    return ids, mask


def _max_diff(got: torch.Tensor, want: torch.Tensor, mask: torch.Tensor) -> float:
    return (got - want)[mask.bool()].abs().max().item()


def _assert_same_vectors(mine: np.ndarray, theirs: np.ndarray) -> None:
    assert mine.shape == theirs.shape
    cos = (mine * theirs).sum(1) / (np.linalg.norm(mine, axis=1) * np.linalg.norm(theirs, axis=1))
    assert cos.min() >= 0.99999, cos.min()
    assert np.abs(mine - theirs).max() <= 1e-5, np.abs(mine - theirs).max()


@pytest.mark.parametrize("name", list(CASES))
def test_last_hidden_state_matches_transformers(name, tmp_path):
    ref = _make(name, tmp_path)
    enc = encoderkit.load(tmp_path)  # backbone-only folder
    assert enc.tokenizer is None and enc.pooling == "last"
    cfg = enc.config
    assert (cfg.num_heads, cfg.num_kv_heads) == (4, 2)
    assert cfg.head_dim == CASES[name][2].get("head_dim", 16)
    assert cfg.causal == (CASES[name][2].get("is_causal", True))
    if name == "qwen3-sliding":  # layers from max_window_layers on slide
        assert cfg.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    for left in (False, True):  # padding on either side (sentence-transformers pads decoders on the left)
        ids, mask = _batch(left=left)
        with torch.no_grad():
            want = ref(input_ids=ids, attention_mask=mask).last_hidden_state
            got = enc.model(input_ids=ids, attention_mask=mask)
        assert got.shape == want.shape == (3, 20, 64)
        assert _max_diff(got, want, mask) <= 1e-5
    with torch.no_grad():  # no mask at all: the causal / window path alone
        assert (enc.model(input_ids=ids[:1]) - ref(input_ids=ids[:1]).last_hidden_state).abs().max().item() <= 1e-5


def test_attention_options_change_the_output(tmp_path):
    """The parity above is not vacuous: flipping causality or the window size changes the hidden states."""
    _make("mistral", tmp_path)
    enc = encoderkit.load(tmp_path)
    ids, mask = _batch()
    with torch.no_grad():
        base = enc.model(input_ids=ids, attention_mask=mask)
        for field, value in (("causal", False), ("sliding_window", 7)):
            old = getattr(enc.config, field)
            setattr(enc.config, field, value)
            changed = enc.model(input_ids=ids, attention_mask=mask)
            setattr(enc.config, field, old)
            assert _max_diff(changed, base, mask) > 1e-2, field


def test_causal_lm_checkpoint_loads_backbone(tmp_path):
    """A *ForCausalLM file keeps the backbone under "model." and an lm_head beside it (skipped)."""
    ref = _make("qwen3", tmp_path, lm=True)
    enc = encoderkit.load(tmp_path)
    ids, mask = _batch()
    with torch.no_grad():
        want = ref.model(input_ids=ids, attention_mask=mask).last_hidden_state
        assert _max_diff(enc.model(input_ids=ids, attention_mask=mask), want, mask) <= 1e-5


# ------------------------------------------------------------------ tokenization

def _llama_tokenizer(folder, post: str | None, tokenizer_class: str, flags: dict) -> None:
    """A tiny Llama-style tokenizer: BPE over "▁w<digit>" pieces with a Metaspace pre-tokenizer (the pipeline
    transformers' LlamaTokenizer rebuilds from tokenizer.json's vocab), `post` as its post-processor template,
    and tokenizer_config `flags` (add_bos_token / add_eos_token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    specials = ["<unk>", "<s>", "</s>"]
    pieces = ["▁", "w", *map(str, range(10)), "▁w", *(f"▁w{d}" for d in range(10))]
    vocab = {t: i for i, t in enumerate(specials + pieces)}
    merges = [("▁", "w")] + [("▁w", str(d)) for d in range(10)]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Metaspace()
    if post is not None:
        tok.post_processor = processors.TemplateProcessing(single=post, pair=post + " $B:1",
                                                           special_tokens=[("<s>", 1), ("</s>", 2)])
    tok.add_special_tokens(specials)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": tokenizer_class, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
         "pad_token": "</s>", "model_max_length": MAX_LEN, **flags}))


FLAGS = [{}, {"add_eos_token": True}, {"add_bos_token": True, "add_eos_token": True},
         {"add_bos_token": False, "add_eos_token": False}]


@pytest.mark.parametrize("tokenizer_class", ["LlamaTokenizerFast", "PreTrainedTokenizerFast"])
@pytest.mark.parametrize("post", ["<s> $A", "<s> $A </s>", None])
def test_llama_style_token_ids_match_autotokenizer(tokenizer_class, post, tmp_path):
    """e5-mistral / Llama folders: tokenizer_config's add_bos_token / add_eos_token next to a tokenizer.json.
    transformers 5 drops both flags whenever tokenizer.json exists (its post-processor decides, for
    LlamaTokenizerFast as for PreTrainedTokenizerFast); encoderkit gives the same ids."""
    from transformers import AutoTokenizer

    _make("mistral", tmp_path / "m", vocab_size=40)
    texts = ["w1 w23 w4", "w9", "w0 w0 w0 w12 w345"]
    for i, flags in enumerate(FLAGS):
        folder = tmp_path / "m"
        _llama_tokenizer(folder, post, tokenizer_class, flags)
        want = AutoTokenizer.from_pretrained(folder)(texts)["input_ids"]
        enc = encoderkit.load(folder)
        assert [e.ids for e in enc.tokenize(texts)] == want, flags
        first, last = want[0][0], want[0][-1]
        assert (first == 1) == (post is not None and post.startswith("<s>"))  # BOS exactly when the template has it
        assert (last == 2) == (post is not None and post.endswith("</s>"))


@pytest.mark.parametrize("template,flags", [("eos", {}), ("bos", {"add_eos_token": True}),
                                            ("none", {"add_bos_token": True, "add_eos_token": True})])
def test_word_level_token_ids_match_autotokenizer(template, flags, tmp_path):
    """Qwen3-Embedding's kind (post-processor appends <|endoftext|>, padding_side left) and BOS-only / bare
    templates with the flags set: the same ids as AutoTokenizer, texts truncated at max length included."""
    from transformers import AutoTokenizer

    _make("qwen3", tmp_path)
    write_tokenizer(tmp_path, VOCAB, template, pad="<|endoftext|>", unk="<unk>", padding_side="left",
                    model_max_length=16, extra_config=flags)
    texts = sentences(6, VOCAB, seed=3, max_len=30)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    want = tok(texts, truncation=True, max_length=16)["input_ids"]
    enc = encoderkit.load(tmp_path, max_length=16)
    assert [e.ids for e in enc.tokenize(texts)] == want
    if template == "eos":
        assert all(ids[-1] == tok.convert_tokens_to_ids("<|endoftext|>") for ids in want)
        assert enc.pad_id == tok.pad_token_id


# ------------------------------------------------------------------ sentence-transformers

def _qwen3_st(tmp_path, layout: str, name: str = "qwen3", template: str = "eos", max_seq_length: int | None = None):
    _make(name, tmp_path / "hf")
    write_tokenizer(tmp_path / "hf", VOCAB, template, pad="<|endoftext|>", unk="<unk>", padding_side="left",
                    model_max_length=MAX_LEN)
    return st_folder(tmp_path / "hf", tmp_path / "st", pooling="lasttoken", prompts=QWEN3_PROMPTS, layout=layout,
                     max_seq_length=max_seq_length)


@pytest.mark.parametrize("name,layout", [("qwen3", "current"), ("qwen3", "old"), ("gte-qwen2", "current"),
                                         ("mistral", "old")])
def test_sentence_transformers_parity(name, layout, tmp_path):
    """lasttoken pooling + Normalize, plain and with the Qwen3-style query prompt; sentence-transformers pads
    left (the folder's padding_side), encoderkit right: the vectors agree."""
    from sentence_transformers import SentenceTransformer

    folder = _qwen3_st(tmp_path, layout, name, template="bos" if name == "mistral" else "eos")
    st = SentenceTransformer(str(folder), device="cpu")
    assert st.tokenizer.padding_side == "left"
    enc = encoderkit.load(folder)
    assert enc.pooling == "last" and enc.normalize
    texts = sentences(9, VOCAB, seed=2, max_len=25)  # mixed lengths: long padding runs inside each batch
    _assert_same_vectors(enc.encode(texts, batch_size=4), st.encode(texts, batch_size=4))
    _assert_same_vectors(enc.encode(texts, prompt_name="query", batch_size=4),
                         st.encode(texts, prompt_name="query", batch_size=4))


def test_plain_folder_defaults_to_last_token(tmp_path):
    """A plain Hugging Face folder gets the family's default pooling: the last real token (its EOS); an input
    of exactly max_position_embeddings tokens is one of the texts."""
    ref = _make("qwen3", tmp_path)
    write_tokenizer(tmp_path, VOCAB, "eos", pad="<|endoftext|>", unk="<unk>", padding_side="left",
                    model_max_length=MAX_LEN)
    enc = encoderkit.load(tmp_path)
    assert enc.max_length == MAX_LEN
    texts = [*sentences(4, VOCAB, seed=5), " ".join(f"w{i}" for i in range(MAX_LEN - 1))]
    assert len(enc.tokenize(texts)[-1].ids) == MAX_LEN
    mine = enc.encode(texts)
    from transformers import AutoTokenizer

    batch = AutoTokenizer.from_pretrained(tmp_path)(texts, padding=True, return_tensors="pt")  # left-padded
    with torch.no_grad():
        hidden = ref(**batch).last_hidden_state
    np.testing.assert_allclose(mine, hidden[:, -1].numpy(), atol=1e-5)


def test_batch_invariance_and_exact_max_length(tmp_path):
    from sentence_transformers import SentenceTransformer

    folder = _qwen3_st(tmp_path, "current", max_seq_length=24)
    enc = encoderkit.load(folder)
    assert enc.max_length == 24
    short = "w1 w2 w3"
    longer = sentences(5, VOCAB, seed=4, min_len=15, max_len=40)
    alone = enc.encode([short])
    among = enc.encode([short, *longer], batch_size=6)
    assert np.abs(alone[0] - among[0]).max() <= 1e-5
    exact = " ".join(f"w{i}" for i in range(23))  # 23 words + <|endoftext|> = 24 tokens, exactly the limit
    assert len(enc.tokenize([exact])[0].ids) == 24
    over = exact + " w50 w51 w52"  # truncated to 24, <|endoftext|> kept last in both
    st = SentenceTransformer(str(folder), device="cpu")
    _assert_same_vectors(enc.encode([exact, over, short]), st.encode([exact, over, short]))
    with pytest.raises(ValueError, match="24 tokens"):
        enc.encode([over], truncate=False)


@pytest.mark.parametrize("name", ["qwen3", "gte-qwen2"])
def test_save_round_trip(name, tmp_path):
    """Encoder.save writes a folder transformers' AutoModel and SentenceTransformer load with the same numbers."""
    from sentence_transformers import SentenceTransformer

    folder = _qwen3_st(tmp_path, "old", name)
    enc = encoderkit.load(folder)
    texts = sentences(6, VOCAB, seed=6)
    mine = enc.encode(texts, prompt_name="query")
    out = enc.save(tmp_path / "out")
    again = transformers.AutoModel.from_pretrained(out).eval()
    ids, mask = _batch()
    with torch.no_grad():
        want = again(input_ids=ids, attention_mask=mask).last_hidden_state
        assert _max_diff(enc.model(input_ids=ids, attention_mask=mask), want, mask) <= 1e-5
    _assert_same_vectors(SentenceTransformer(str(out), device="cpu").encode(texts, prompt_name="query"), mine)
    _assert_same_vectors(encoderkit.load(out).encode(texts, prompt_name="query"), mine)


@pytest.mark.parametrize("name", list(CASES))
def test_to_hf_config_rebuilds_the_network(name, tmp_path):
    """Our config written back as config.json (transformers 5 names) rebuilds the same network in transformers."""
    from encoderkit.checkpoints.decoder_family import decoder_to_hf_config

    _make(name, tmp_path)
    enc = encoderkit.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(decoder_to_hf_config(enc.config)))
    again = transformers.AutoModel.from_pretrained(tmp_path).eval()
    assert type(again).__name__ == CASES[name][1]
    ids, mask = _batch()
    with torch.no_grad():
        want = again(input_ids=ids, attention_mask=mask).last_hidden_state
        assert _max_diff(enc.model(input_ids=ids, attention_mask=mask), want, mask) <= 1e-5


@pytest.mark.parametrize("field,value,tensor", [
    ("num_key_value_heads", 4, "layers.0.self_attn.q_proj.weight + layers.0.self_attn.k_proj.weight"),
    ("head_dim", 16, "layers.0.self_attn.q_proj.weight"),
    ("intermediate_size", 81, "layers.0.mlp.gate_proj.weight"),
])
def test_shape_mismatch_names_file_and_tensor(field, value, tensor, tmp_path):
    _make("qwen3", tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg[field] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as e:
        encoderkit.load(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "model.safetensors" in msg and tensor in msg


def test_missing_bias_and_unsupported_rope_are_named(tmp_path):
    _make("qwen2", tmp_path)
    from safetensors.torch import load_file, save_file

    st = load_file(str(tmp_path / "model.safetensors"))
    del st["layers.2.self_attn.v_proj.bias"]
    save_file(st, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"layers\.2\.self_attn\.v_proj\.bias.*missing"):
        encoderkit.load(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="yarn"):
        encoderkit.load(tmp_path)
