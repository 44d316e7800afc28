"""NomicBERT (nomic-embed-text v1 / v1.5) parity: tiny random checkpoints written by `transformers` (nomic_bert
names in config.json, the original tensor names in model.safetensors), the same folders rewritten with the
original remote-code config names (n_embd, rotary_emb_*, ...), and state dicts under transformers' module names
all load into encoderkit and give the same hidden states, and the same sentence vectors as
sentence-transformers with the search_query / search_document prompts."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import encoderkit
from encoderkit.checkpoints.weights import CheckpointError, export_mapped
from tiny_checkpoints import N_SPECIAL, sentences, st_folder, word, write_tokenizer

transformers = pytest.importorskip("transformers")

VOCAB, MAX_LEN, H, HEADS = 128, 64, 48, 4
D_K = H // HEADS
BASE = dict(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=3, num_attention_heads=HEADS,
            intermediate_size=256, max_position_embeddings=MAX_LEN, type_vocab_size=2, layer_norm_eps=1e-12,
            rope_parameters={"rope_type": "default", "rope_theta": 1000.0}, initializer_range=0.2)
PROMPTS = {"query": "search_query: ", "document": "search_document: "}
TEXT_VOCAB = VOCAB - 3  # the last three words of the vocabulary are renamed to the prompt tokens


def _make(folder, tokenizer: bool = False, **over):
    """A transformers NomicBertModel with non-trivial LayerNorms, saved to folder (optionally with a tokenizer)."""
    torch.manual_seed(0)
    ref = transformers.NomicBertModel(transformers.NomicBertConfig(**{**BASE, **over})).eval()
    with torch.no_grad():  # so that a mis-mapped norm (or the two norms swapped) cannot hide
        for n, p in ref.named_parameters():
            if "LayerNorm" in n or "layernorm" in n:
                p.add_(torch.randn_like(p) * 0.2)
    ref.save_pretrained(folder)
    if tokenizer:
        _write_tokenizer(folder, ref.config.max_position_embeddings)
    return ref


def _write_tokenizer(folder, max_len: int) -> None:
    """BERT framing ([CLS] .. [SEP]); "search_query", "search_document" and ":" are words of the vocabulary so that
    the two prompts give different token ids."""
    write_tokenizer(folder, VOCAB, "bert", model_max_length=max_len)
    tj = json.loads((folder / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    for i, tok in enumerate(("search_query", "search_document", ":")):
        vocab[tok] = vocab.pop(word(VOCAB - N_SPECIAL - 1 - i))
    (folder / "tokenizer.json").write_text(json.dumps(tj))


def _to_original_layout(folder, **config) -> None:
    """Rewrite a transformers-written folder as the published nomic-embed-text folders are: config.json with the
    GPT-2 style names of Nomic's remote code; tensors under encoder.layers.N.attn.Wqkv / mlp.fc11 ... names."""
    c = json.loads((folder / "config.json").read_text())
    orig = {"model_type": "nomic_bert", "architectures": ["NomicBertModel"], "vocab_size": c["vocab_size"],
            "n_embd": c["hidden_size"], "n_head": c["num_attention_heads"], "n_layer": c["num_hidden_layers"],
            "n_inner": c["intermediate_size"], "n_positions": c["max_position_embeddings"],
            "activation_function": {"silu": "swiglu", "gelu": "geglu"}[c["hidden_act"]],
            "layer_norm_epsilon": c["layer_norm_eps"], "type_vocab_size": c["type_vocab_size"],
            "rotary_emb_base": c["rope_parameters"]["rope_theta"], "rotary_emb_fraction": 1.0,
            "rotary_emb_interleaved": False, "rotary_emb_scale_base": None, "rotary_scaling_factor": None,
            "max_trained_positions": 2048, "qkv_proj_bias": False, "mlp_fc1_bias": False, "mlp_fc2_bias": False,
            "prenorm": False, "parallel_block": False, "causal": False, "pad_vocab_size_multiple": 64,
            "attn_pdrop": 0.0, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
            "auto_map": {"AutoConfig": "nomic-ai/nomic-bert-2048--configuration_hf_nomic_bert.NomicBertConfig",
                         "AutoModel": "nomic-ai/nomic-bert-2048--modeling_hf_nomic_bert.NomicBertModel"}}
    orig.update(config)
    (folder / "config.json").write_text(json.dumps(orig, indent=2))


def _published_names(n_layers: int) -> set[str]:
    names = {"embeddings.word_embeddings.weight", "embeddings.token_type_embeddings.weight", "emb_ln.weight",
             "emb_ln.bias"}
    for i in range(n_layers):
        t = f"encoder.layers.{i}"
        names |= {f"{t}.attn.Wqkv.weight", f"{t}.attn.out_proj.weight", f"{t}.mlp.fc11.weight",
                  f"{t}.mlp.fc12.weight", f"{t}.mlp.fc2.weight"}
        names |= {f"{t}.{n}.{p}" for n in ("norm1", "norm2") for p in ("weight", "bias")}
    return names


def _rewrite_tensors(folder, fn) -> None:
    from safetensors.torch import load_file, save_file

    st = load_file(str(folder / "model.safetensors"))
    save_file(fn(st), str(folder / "model.safetensors"))


def _permute_qk(st: dict, perm: list[int]) -> dict:
    """Reorder the features of every q and k head in Wqkv: row h*d_k + j of q (and k) becomes row h*d_k + perm[j].
    The same reordering of q and k leaves q.k unchanged, so it moves rotary pairs without changing the network."""
    idx = torch.tensor([h * D_K + p for h in range(HEADS) for p in perm])
    for k in [k for k in st if k.endswith("attn.Wqkv.weight")]:
        w = st[k].clone()
        w[:H], w[H:2 * H] = st[k][:H][idx], st[k][H:2 * H][idx]
        st[k] = w
    return st


def _batch(T: int = 17):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(N_SPECIAL, VOCAB, (3, T), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 11:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    types = torch.zeros_like(ids)
    types[:, 7:] = 1  # a second segment, so the token type table is used
    return ids, mask, types


def _hidden_diff(enc, ref) -> float:
    ids, mask, types = _batch()
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = enc.model(input_ids=ids, attention_mask=mask, token_type_ids=types)
    assert got.shape == want.shape
    return (got - want)[mask.bool()].abs().max().item()


def _assert_same_vectors(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= 0.99999 and np.abs(a - b).max() <= 1e-5, (cos.min(), np.abs(a - b).max())


# ---------------------------------------------------------------- backbone parity
@pytest.mark.parametrize("act", ["silu", "gelu"])  # SwiGLU (the published checkpoints), GeGLU
def test_last_hidden_state_matches_transformers(act, tmp_path):
    ref = _make(tmp_path, hidden_act=act)
    enc = encoderkit.load(tmp_path)
    assert enc.tokenizer is None and enc.config.rotary_base == 1000.0 and enc.config.hidden_act == act
    assert _hidden_diff(enc, ref) <= 1e-5


def test_transformers_writes_the_published_tensor_names(tmp_path):
    _make(tmp_path)
    from safetensors.torch import load_file

    assert set(load_file(str(tmp_path / "model.safetensors"))) == _published_names(BASE["num_hidden_layers"])


def test_gate_and_norm_order_matter(tmp_path):
    """The parity test can fail: fc11 / fc12 swapped (which is the gate) or norm1 / norm2 swapped change the output."""
    ref = _make(tmp_path / "ref")
    for a, b in (("mlp.fc11.", "mlp.fc12."), ("norm1.", "norm2.")):
        folder = tmp_path / a.strip(".")
        shutil.copytree(tmp_path / "ref", folder)
        _rewrite_tensors(folder, lambda st: {k.replace(a, "#").replace(b, a).replace("#", b): v for k, v in st.items()})
        assert _hidden_diff(encoderkit.load(folder), ref) > 1e-2


def test_masked_lm_checkpoint_loads_backbone(tmp_path):
    """NomicBertForMaskedLM keeps the encoder under "nomic_bert." (Nomic's own pre-training files: "bert.");
    the loader finds the prefix and leaves the MLM head out."""
    torch.manual_seed(0)
    ref = transformers.NomicBertForMaskedLM(transformers.NomicBertConfig(**BASE)).eval()
    ref.save_pretrained(tmp_path)
    assert _hidden_diff(encoderkit.load(tmp_path), ref.nomic_bert) <= 1e-5


def test_module_named_state_dict_loads(tmp_path):
    """A state dict saved straight from the transformers module (layers.N.self_attn.q_proj, mlp.up_proj, ...)."""
    from safetensors.torch import save_file

    ref = _make(tmp_path)
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    assert "layers.0.self_attn.q_proj.weight" in state and "layers.0.mlp.gate_proj.weight" in state
    save_file(state, str(tmp_path / "model.safetensors"))
    assert _hidden_diff(encoderkit.load(tmp_path), ref) <= 1e-5


def test_original_layout_matches_transformers(tmp_path):
    """The published layout: config.json with n_embd / n_head / n_layer / n_inner / rotary_emb_* fields."""
    ref = _make(tmp_path)
    _to_original_layout(tmp_path)
    enc = encoderkit.load(tmp_path)
    cfg = enc.config
    assert (cfg.hidden_size, cfg.num_heads, cfg.num_layers, cfg.intermediate_size) == (H, HEADS, 3, 256)
    assert cfg.original_config and cfg.max_position_embeddings == MAX_LEN and cfg.hidden_act == "silu"
    assert _hidden_diff(enc, ref) <= 1e-5


def test_original_interleaved_rotary(tmp_path):
    """rotary_emb_interleaved=true rotates pairs (x0, x1), (x2, x3), ...: with every q / k head's features
    reordered so those pairs hold what the half-split pairs (x_i, x_{i+d/2}) held, the network equals the
    transformers (half-split) one; without the reordering it does not."""
    ref = _make(tmp_path / "a")
    _to_original_layout(tmp_path / "a", rotary_emb_interleaved=True)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert _hidden_diff(encoderkit.load(tmp_path / "a"), ref) > 1e-3
    perm = [j // 2 + (D_K // 2 if j % 2 else 0) for j in range(D_K)]  # interleaved slot j <- half-split feature
    _rewrite_tensors(tmp_path / "b", lambda st: _permute_qk(st, perm))
    assert _hidden_diff(encoderkit.load(tmp_path / "b"), ref) <= 1e-5


def test_original_partial_rotary(tmp_path):
    """rotary_emb_fraction=0.5: RoPE on the first half of each head's features (base^(-2i/r), r = d_k / 2), the
    rest passed through. Oracle: transformers with its frequencies set to those r/2 angles followed by zeros
    (angle 0 = no rotation), and q / k features reordered into its half-split pairs."""
    ref = _make(tmp_path)
    r = D_K // 2
    freqs = 1.0 / (1000.0 ** (torch.arange(0, r, 2).float() / r))
    ref.rotary_emb.inv_freq.copy_(torch.cat([freqs, torch.zeros(D_K // 2 - r // 2)]))
    half = D_K // 2  # ours: rotated pairs (j, j + r/2) for j < r/2, then d_k - r unrotated features
    perm = [*range(r // 2), *range(half, half + r // 2), *range(r // 2, half), *range(half + r // 2, D_K)]
    _to_original_layout(tmp_path, rotary_emb_fraction=0.5)
    _rewrite_tensors(tmp_path, lambda st: _permute_qk(st, perm))
    enc = encoderkit.load(tmp_path)
    assert enc.config.rotary_dim == r
    assert _hidden_diff(enc, ref) <= 1e-5


# ---------------------------------------------------------------- sentence-transformers
def _st(tmp_path, layout: str, max_len: int = MAX_LEN, **over):
    """A sentence-transformers folder (mean pooling, Normalize, the two task prompts) around a tiny checkpoint."""
    ref = _make(tmp_path / "hf", tokenizer=True, max_position_embeddings=max_len, **over)
    folder = st_folder(tmp_path / "hf", tmp_path / f"st-{layout}", pooling="mean", normalize=True, prompts=PROMPTS,
                       max_seq_length=max_len, layout=layout)
    return ref, folder


def _tdir(st_dir):
    """The transformer's folder inside a sentence-transformers folder."""
    from encoderkit.checkpoints.sentence_transformers import read_pipeline

    return read_pipeline(st_dir).transformer_dir


@pytest.mark.parametrize("layout", ["current", "old"])
@pytest.mark.parametrize("original", [False, True], ids=["hf-config", "original-config"])
def test_sentence_transformers_parity_with_prompts(layout, original, tmp_path):
    from sentence_transformers import SentenceTransformer

    _, folder = _st(tmp_path, layout)
    want_model = SentenceTransformer(str(folder), device="cpu")
    if original:  # sentence-transformers would need Nomic's remote code for it: compare with the hf-config folder
        shutil.copytree(folder, tmp_path / "orig")
        folder = tmp_path / "orig"
        _to_original_layout(_tdir(folder))
    ours = encoderkit.load(folder)
    assert ours.pooling == "mean" and ours.normalize and ours.prompts == PROMPTS
    texts = sentences(10, TEXT_VOCAB, seed=3, min_len=1, max_len=40)
    got = {p: ours.encode(texts, batch_size=4, prompt_name=p) for p in (None, "query", "document")}
    for p, vecs in got.items():
        _assert_same_vectors(vecs, want_model.encode(texts, batch_size=4, prompt_name=p))
    assert np.abs(got["query"] - got["document"]).max() > 1e-2  # the two prompts are different inputs


def test_batch_invariance_and_exact_max_length(tmp_path):
    from sentence_transformers import SentenceTransformer

    _, folder = _st(tmp_path, "old")
    enc = encoderkit.load(folder)
    assert enc.max_length == MAX_LEN
    short = "w1 w2 w3"
    longs = sentences(5, TEXT_VOCAB, seed=7, min_len=50, max_len=80)  # truncated to MAX_LEN
    alone = enc.encode([short], prompt_name="query")
    batched = enc.encode(longs + [short], batch_size=8, prompt_name="query")
    assert np.abs(batched[-1] - alone[0]).max() <= 1e-5
    exact = " ".join(word(i % TEXT_VOCAB) for i in range(MAX_LEN - 2))  # [CLS] + words + [SEP] = MAX_LEN tokens
    assert len(enc.tokenize([exact])[0].ids) == MAX_LEN
    v = enc.encode([exact, short], truncate=False)
    _assert_same_vectors(v, SentenceTransformer(str(folder), device="cpu").encode([exact, short]))
    with pytest.raises(ValueError, match=str(MAX_LEN)):
        enc.encode([exact + " w5"], truncate=False)


def test_8192_tokens_as_published(tmp_path):
    """nomic-embed-text runs to 8,192 tokens (n_positions; rotary, no table): an input of exactly 8,192 tokens
    gives the sentence-transformers vector, also in the original layout."""
    from sentence_transformers import SentenceTransformer

    _, folder = _st(tmp_path, "old", max_len=8192, num_hidden_layers=1)  # one layer: 8,192^2 attention is slow
    text = " ".join(word(i % TEXT_VOCAB) for i in range(8192 - 2))
    want = SentenceTransformer(str(folder), device="cpu").encode([text, "w1 w2"])
    _to_original_layout(_tdir(folder))
    enc = encoderkit.load(folder)
    assert enc.max_length == 8192 and enc.config.max_position_embeddings == 8192
    _assert_same_vectors(enc.encode([text, "w1 w2"], truncate=False), want)


# ---------------------------------------------------------------- saving
@pytest.mark.parametrize("layout", ["current", "old"])
def test_save_round_trip(layout, tmp_path):
    from sentence_transformers import SentenceTransformer

    ref, folder = _st(tmp_path, layout)
    enc = encoderkit.load(folder)
    out = enc.save(tmp_path / "out")
    again = transformers.AutoModel.from_pretrained(out).eval()
    ids, mask, types = _batch()
    with torch.no_grad():
        d = (again(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
             - ref(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state)[mask.bool()]
    assert d.abs().max().item() <= 1e-6
    texts = sentences(6, TEXT_VOCAB, seed=9, max_len=30)
    st = SentenceTransformer(str(out), device="cpu")
    for p in ("query", "document"):
        _assert_same_vectors(st.encode(texts, prompt_name=p), enc.encode(texts, prompt_name=p))
        _assert_same_vectors(encoderkit.load(out).encode(texts, prompt_name=p), enc.encode(texts, prompt_name=p))


def test_original_layout_saves_as_read(tmp_path):
    """An original-layout folder is written back in that layout (config names and tensor names), and reloads."""
    _, folder = _st(tmp_path, "old")
    _to_original_layout(_tdir(folder), rotary_emb_interleaved=True)
    enc = encoderkit.load(folder)
    out = enc.save(tmp_path / "out")
    c = json.loads((out / "config.json").read_text())
    assert c["n_embd"] == H and c["rotary_emb_interleaved"] is True and "hidden_size" not in c
    from safetensors.torch import load_file

    assert set(load_file(str(out / "model.safetensors"))) == _published_names(3)
    texts = sentences(5, TEXT_VOCAB, seed=4)
    np.testing.assert_array_equal(encoderkit.load(out).encode(texts), enc.encode(texts))


@pytest.mark.parametrize("original", [False, True])
def test_to_hf_config_rebuilds_the_network(original, tmp_path):
    """A model built by create_model (no config.json to copy) is written with to_hf_config: transformers' names
    when it can build the same network (it loads in AutoModel and gives the same states), else the original names."""
    from encoderkit.checkpoints.registry import create_model, family_for
    from encoderkit.checkpoints.weights import save_safetensors

    fam = family_for("nomic_bert")
    fields = {k: v for k, v in BASE.items() if k != "initializer_range"}
    if original:
        fields = dict(n_embd=H, n_head=HEADS, n_layer=2, n_inner=200, vocab_size=VOCAB, activation_function="swiglu",
                      rotary_emb_fraction=0.5, rotary_emb_base=500, qkv_proj_bias=True, mlp_fc1_bias=True,
                      mlp_fc2_bias=True)
    torch.manual_seed(0)
    model = create_model("nomic_bert", **fields).eval()
    cfg = model.config
    hf = fam.to_hf_config(cfg)
    assert fam.parse_config(hf) == cfg
    (tmp_path / "config.json").write_text(json.dumps(hf))
    save_safetensors(export_mapped(model, fam.key_map(cfg)), tmp_path / "model.safetensors")
    ids, mask, types = _batch()
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
        got = encoderkit.load(tmp_path).model(input_ids=ids, attention_mask=mask, token_type_ids=types)
        assert torch.equal(got, want)
        if original:
            assert cfg.intermediate_size == 256 and cfg.qkv_bias and "n_embd" in hf  # 200 rounded up as Nomic's code
        else:
            again = transformers.AutoModel.from_pretrained(tmp_path).eval()
            d = again(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state - want
            assert d[mask.bool()].abs().max().item() <= 1e-5


# ---------------------------------------------------------------- errors
def test_shape_mismatch_names_file_and_tensor(tmp_path):
    _make(tmp_path)
    c = json.loads((tmp_path / "config.json").read_text())
    c["intermediate_size"] = 81
    (tmp_path / "config.json").write_text(json.dumps(c))
    with pytest.raises(CheckpointError) as e:
        encoderkit.load(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "model.safetensors" in msg and "encoder.layers.0.mlp.fc12.weight" in msg
    assert "(162, 48)" in msg


def test_original_config_mismatch_names_tensor(tmp_path):
    _make(tmp_path)
    _to_original_layout(tmp_path, n_head=4, n_embd=64)
    with pytest.raises(CheckpointError, match=r"^[^\n]*embeddings\.word_embeddings\.weight[^\n]*\(128, 64\)"):
        encoderkit.load(tmp_path)


def test_missing_tensor_names_it(tmp_path):
    _make(tmp_path)
    _rewrite_tensors(tmp_path, lambda st: {k: v for k, v in st.items() if k != "encoder.layers.1.norm2.bias"})
    with pytest.raises(CheckpointError, match=r"encoder\.layers\.1\.norm2\.bias.*missing"):
        encoderkit.load(tmp_path)


@pytest.mark.parametrize("field,value", [("prenorm", True), ("rotary_scaling_factor", 2.0),
                                         ("activation_function", "gelu"), ("rotary_emb_fraction", 0.0),
                                         ("moe_every_n_layers", 2)])  # nomic-embed-text-v2-moe
def test_unsupported_original_options_are_refused(field, value, tmp_path):
    _make(tmp_path)
    _to_original_layout(tmp_path, **{field: value})
    with pytest.raises(CheckpointError, match=field) as e:
        encoderkit.load(tmp_path)
    assert "\n" not in str(e.value)
