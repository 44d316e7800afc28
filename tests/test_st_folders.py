"""sentence-transformers folders of both layouts (6.x and the older `sentence_transformers.models.*` one) against
SentenceTransformer itself: every pooling mode and combination, Dense activations / bias / residual, Normalize,
include_prompt=False, prompts with encode_query / encode_document, the asymmetric Router, saving in the 6.x
layout, devices, and the errors for what does not load."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

import encoderkit
from encoderkit.checkpoints.weights import CheckpointError
from tiny_checkpoints import sentences, st_folder, to_old_layout, write_tokenizer

st = pytest.importorskip("sentence_transformers")
transformers = pytest.importorskip("transformers")
logging.getLogger("sentence_transformers").setLevel(logging.ERROR)

V = 120
TEXTS = sentences(9, V, seed=3, min_len=1, max_len=18) + ["w1", "W3 w4 W5"]


def _bert(folder, seed=0, hidden=32):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=V, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64)
    m = transformers.BertModel(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorms, so a mis-mapped norm cannot hide
        for n, p in m.named_parameters():
            if "LayerNorm" in n:
                p.add_(torch.randn_like(p) * 0.1)
    m.save_pretrained(folder)
    write_tokenizer(folder, V, "bert", model_max_length=64)
    return folder


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return _bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def bert_dir_b(tmp_path_factory):
    return _bert(tmp_path_factory.mktemp("bert_b"), seed=1)


def _ref(folder):
    return st.SentenceTransformer(str(folder), device="cpu")


def _check(ours, ref, tol=1e-5):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape
    diff = np.abs(ours - ref).max()
    assert diff <= tol, f"max abs diff {diff}"
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.99999
    return diff


def _edit(path, **changes):
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


# ------------------------------------------------------------------ the real model, resaved by sentence-transformers 6
def test_real_minilm_resaved_by_st6(tmp_path):
    from encoderkit.checkpoints.hub import packaged_folder

    src = packaged_folder("sentence-transformers/all-MiniLM-L6-v2")
    if src is None:
        pytest.skip("the all-MiniLM-L6-v2 package is not installed")
    ref = _ref(src)
    ref.save(str(tmp_path))
    assert "max_seq_length" not in json.loads((tmp_path / "sentence_bert_config.json").read_text())
    enc = encoderkit.load(tmp_path)
    assert (enc.max_length, enc.pooling, enc.normalize, enc.dim) == (256, "mean", True, 384)
    texts = ["The cat sat on the mat.", "Sentence embeddings map text to vectors.",
             "A considerably longer sentence, with punctuation; numbers like 42 and UPPER case words, to pad the batch."]
    _check(enc.encode(texts), _ref(tmp_path).encode(texts), tol=1e-4)


# ------------------------------------------------------------------ pooling
MODES = ["cls", "lasttoken", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", ("cls", "mean"),
         ("lasttoken", "max", "weightedmean", "mean_sqrt_len_tokens")]


@pytest.mark.parametrize("layout", ["current", "old"])
@pytest.mark.parametrize("mode", MODES, ids=lambda m: "+".join(m) if isinstance(m, tuple) else m)
def test_pooling_modes(bert_dir, tmp_path, mode, layout):
    folder = st_folder(bert_dir, tmp_path / "st", pooling=mode, normalize=False,
                       layout="current" if isinstance(mode, tuple) else layout)
    if isinstance(mode, tuple) and layout == "old":  # several pooling_mode_* flags on: ST concatenates in its fixed order
        to_old_layout_multi(folder, mode)
    enc = encoderkit.load(folder)
    ref = _ref(folder)
    assert enc.dim == ref.get_embedding_dimension()
    _check(enc.encode(TEXTS, batch_size=4), ref.encode(TEXTS, batch_size=4))


def to_old_layout_multi(folder, modes):
    flags = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens", "mean": "pooling_mode_mean_tokens",
             "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
             "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}
    cfg = folder / "1_Pooling" / "config.json"
    dim = json.loads(cfg.read_text())["embedding_dimension"]
    _edit(cfg, pooling_mode=modes[0])  # a valid single mode so to_old_layout runs; the flags are set below
    to_old_layout(folder)
    cfg.write_text(json.dumps({"word_embedding_dimension": dim, **{f: m in modes for m, f in flags.items()}}))


def test_old_flags_concatenate_in_fixed_order(bert_dir, tmp_path):
    folder = st_folder(bert_dir, tmp_path / "st", pooling="mean", normalize=False, layout="current")
    to_old_layout_multi(folder, ("lasttoken", "cls", "mean"))
    enc = encoderkit.load(folder)
    assert enc.pooling == ("cls", "mean", "last")
    _check(enc.encode(TEXTS), _ref(folder).encode(TEXTS))


# ------------------------------------------------------------------ Dense
ACTS = ["Identity", "Tanh", "ReLU", "GELU", "SiLU", "Sigmoid"]


@pytest.mark.parametrize("layout", ["current", "old"])
def test_dense_activations(bert_dir, tmp_path, layout):
    """A chain of Dense layers, one per activation sentence-transformers writes, with and without bias."""
    widths = [32, 28, 24, 30, 20, 26, 16]
    dense = [{"in_features": widths[i], "out_features": widths[i + 1], "bias": i % 2 == 0,
              "activation_function": getattr(torch.nn, act)()} for i, act in enumerate(ACTS)]
    folder = st_folder(bert_dir, tmp_path / "st", pooling="mean", dense=dense, normalize=False, layout=layout)
    cfgs = [json.loads((folder / f"{i + 2}_Dense" / "config.json").read_text()) for i in range(len(ACTS))]
    assert [c["activation_function"].rsplit(".", 1)[-1] for c in cfgs] == ACTS
    enc = encoderkit.load(folder)
    assert enc.dim == 16 and [type(d.activation).__name__ for d in enc.dense] == ACTS
    _check(enc.encode(TEXTS), _ref(folder).encode(TEXTS))


@pytest.mark.parametrize("layout", ["current", "old"])
def test_dense_residual_and_normalize(bert_dir, tmp_path, layout):
    dense = [{"in_features": 32, "out_features": 32, "bias": True, "activation_function": torch.nn.GELU(), "use_residual": True},
             {"in_features": 32, "out_features": 20, "bias": False, "activation_function": None, "use_residual": True}]
    folder = st_folder(bert_dir, tmp_path / "st", pooling="cls", dense=dense, normalize=True, layout=layout)
    assert json.loads((folder / "3_Dense" / "config.json").read_text())["use_residual"] is True
    enc = encoderkit.load(folder)
    assert enc.normalize and enc.dim == 20 and enc.dense[1].residual is not None
    _check(enc.encode(TEXTS), _ref(folder).encode(TEXTS))


# ------------------------------------------------------------------ prompts
PROMPTS = {"query": "w1 w2 w3 ", "document": "w4 ", "classification": "w7 w8 ", "passage": "w9 w10 "}


@pytest.mark.parametrize("mode,layout", [("mean", "current"), ("cls", "current"), ("lasttoken", "current"),
                                         ("weightedmean", "current"), ("max", "current"), ("mean", "old"),
                                         ("weightedmean", "old")])
def test_include_prompt_false(bert_dir, tmp_path, mode, layout):
    folder = st_folder(bert_dir, tmp_path / "st", pooling=mode, normalize=False, prompts=PROMPTS,
                       default_prompt_name="classification", layout=layout)
    _edit(folder / "1_Pooling" / "config.json", include_prompt=False)
    enc, ref = encoderkit.load(folder), _ref(folder)
    assert not enc.include_prompt
    assert enc.prompt_length(PROMPTS["query"]) == 4  # [CLS] w1 w2 w3, the trailing [SEP] not counted
    for kw in ({}, {"prompt_name": "query"}, {"prompt": "w11 w12 w13 w14 "}, {"prompt": ""}):
        _check(enc.encode(TEXTS, **kw), ref.encode(TEXTS, **kw))
    _check(enc.encode_query(TEXTS), ref.encode_query(TEXTS))
    # the prompt really is left out: with include_prompt the vectors differ
    _edit(folder / "1_Pooling" / "config.json", include_prompt=True)
    if mode != "lasttoken":
        assert np.abs(encoderkit.load(folder).encode(TEXTS, prompt_name="query") - enc.encode(TEXTS, prompt_name="query")).max() > 1e-3


@pytest.mark.parametrize("layout", ["current", "old"])
def test_prompts_and_encode_query_document(bert_dir, tmp_path, layout):
    folder = st_folder(bert_dir, tmp_path / "st", pooling="mean", normalize=True, prompts=PROMPTS,
                       default_prompt_name="classification", layout=layout)
    enc, ref = encoderkit.load(folder), _ref(folder)
    assert enc.prompts["query"] == PROMPTS["query"] and enc.default_prompt_name == "classification"
    assert enc.similarity_fn == "cosine"
    for kw in ({}, {"prompt_name": "passage"}, {"prompt": "w5 "}):
        _check(enc.encode(TEXTS, **kw), ref.encode(TEXTS, **kw))
        _check(enc.encode_query(TEXTS, **kw), ref.encode_query(TEXTS, **kw))
        _check(enc.encode_document(TEXTS, **kw), ref.encode_document(TEXTS, **kw))
    # the default prompt applies to encode, not to encode_query / encode_document
    assert np.abs(enc.encode(TEXTS) - enc.encode(TEXTS, prompt="")).max() > 1e-3
    assert np.abs(enc.encode_query(TEXTS) - enc.encode(TEXTS, prompt_name="query")).max() == 0
    # no "document" prompt: sentence-transformers uses none (its "document" key defaults to ""), so do we
    folder2 = st_folder(bert_dir, tmp_path / "st2", pooling="mean", prompts={"passage": "w9 "}, layout=layout)
    _edit(folder2 / "config_sentence_transformers.json", prompts={"passage": "w9 "})  # as older releases saved it
    _check(encoderkit.load(folder2).encode_document(TEXTS), _ref(folder2).encode_document(TEXTS))


# ------------------------------------------------------------------ Router
def _router_folder(bert_dir, bert_dir_b, out, shared=False):
    from sentence_transformers.base.modules import Dense, Normalize, Router, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    ta = Transformer(str(bert_dir))
    tb = ta if shared else Transformer(str(bert_dir_b))
    torch.manual_seed(5)
    q = [ta, Pooling(32, "cls"), Dense(32, 16, activation_function=torch.nn.Tanh())]
    d = [tb, Pooling(32, ("mean", "max")), Dense(64, 16, activation_function=torch.nn.GELU())]
    model = st.SentenceTransformer(modules=[Router.for_query_document(q, d), Normalize()],
                                   prompts={"query": "w1 w2 ", "document": ""}, device="cpu")
    model.save(str(out))
    return out


@pytest.mark.parametrize("shared", [False, True], ids=["two-transformers", "shared-transformer"])
def test_router_parity(bert_dir, bert_dir_b, tmp_path, shared):
    folder = _router_folder(bert_dir, bert_dir_b, tmp_path / "router", shared)
    enc, ref = encoderkit.load(folder), _ref(folder)
    assert set(enc.routes) == {"query", "document"} and enc.default_route == "document"
    assert (enc.routes["query"].model is enc.routes["document"].model) == shared
    _check(enc.encode_query(TEXTS), ref.encode_query(TEXTS))
    _check(enc.encode_document(TEXTS), ref.encode_document(TEXTS))
    _check(enc.encode(TEXTS), ref.encode(TEXTS))  # the default route
    _check(enc.encode(TEXTS, task="query", prompt="w5 "), ref.encode(TEXTS, task="query", prompt="w5 "))
    assert np.abs(enc.encode_query(TEXTS) - enc.encode_document(TEXTS)).max() > 1e-2
    with pytest.raises(ValueError, match="no route for task='classify'"):
        enc.encode(TEXTS, task="classify")
    # saved back (6.x Router layout) it loads in sentence-transformers and in encoderkit with the same vectors
    out = enc.save(tmp_path / "saved")
    assert json.loads((out / "modules.json").read_text())[0]["type"] == "sentence_transformers.base.modules.router.Router"
    again, ref2 = encoderkit.load(out), _ref(out)
    for f in ("encode_query", "encode_document"):
        want = getattr(ref, f)(TEXTS)
        _check(getattr(again, f)(TEXTS), want)
        _check(getattr(ref2, f)(TEXTS), want)


def test_router_old_asym_name_and_route_mappings(bert_dir, bert_dir_b, tmp_path):
    folder = _router_folder(bert_dir, bert_dir_b, tmp_path / "router")
    ref = _ref(folder)
    want_q, want_d = ref.encode_query(TEXTS), ref.encode_document(TEXTS)
    mods = json.loads((folder / "modules.json").read_text())
    mods[0]["type"] = "sentence_transformers.models.Asym"
    (folder / "modules.json").write_text(json.dumps(mods))
    rc = json.loads((folder / "router_config.json").read_text())
    rc["types"] = {k: "sentence_transformers.models." + v.rsplit(".", 1)[-1] for k, v in rc["types"].items()}
    rc["parameters"]["route_mappings"] = {"('search', None)": "query"}
    (folder / "router_config.json").write_text(json.dumps(rc))
    enc = encoderkit.load(folder)
    _check(enc.encode_query(TEXTS), want_q)
    _check(enc.encode_document(TEXTS), want_d)
    _check(enc.encode(TEXTS, task="search", prompt="w1 w2 "), want_q)


def test_router_with_module_encoderkit_cannot_run(bert_dir, bert_dir_b, tmp_path):
    folder = _router_folder(bert_dir, bert_dir_b, tmp_path / "router")
    rc = json.loads((folder / "router_config.json").read_text())
    rc["types"]["query_0_Transformer"] = "sentence_transformers.sparse_encoder.modules.SparseStaticEmbedding"
    (folder / "router_config.json").write_text(json.dumps(rc))
    with pytest.raises(CheckpointError) as e:
        encoderkit.load(folder)
    msg = str(e.value)
    assert "\n" not in msg and "SparseStaticEmbedding" in msg and "query" in msg and "Transformer, Pooling" in msg


# ------------------------------------------------------------------ saving in the 6.x layout
def test_old_layout_saves_as_current_and_round_trips(bert_dir, tmp_path):
    dense = [{"in_features": 64, "out_features": 24, "bias": True, "activation_function": torch.nn.SiLU(), "use_residual": True}]
    folder = st_folder(bert_dir, tmp_path / "old", pooling=("mean", "cls"), dense=dense, normalize=True,
                       prompts={"query": "w1 w2 "}, default_prompt_name="query", layout="current")
    _edit(folder / "1_Pooling" / "config.json", include_prompt=False)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
        "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True, "include_prompt": False}))
    mods = json.loads((folder / "modules.json").read_text())
    for m in mods:
        m["type"] = "sentence_transformers.models." + m["type"].rsplit(".", 1)[-1]
    (folder / "modules.json").write_text(json.dumps(mods))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 40, "do_lower_case": True}))
    texts = TEXTS + ["W1 W2 w3 W4"]  # upper case: [UNK] unless lower-cased
    ref = _ref(folder)
    enc = encoderkit.load(folder)
    assert enc.max_length == 40 and enc.do_lower_case and enc.pooling == ("cls", "mean")
    _check(enc.encode(texts), ref.encode(texts))

    out = enc.save(tmp_path / "saved")
    types = [m["type"] for m in json.loads((out / "modules.json").read_text())]
    assert types == ["sentence_transformers.base.modules.transformer.Transformer",
                     "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
                     "sentence_transformers.base.modules.dense.Dense",
                     "sentence_transformers.base.modules.normalize.Normalize"]
    assert json.loads((out / "1_Pooling" / "config.json").read_text()) == \
        {"embedding_dimension": 32, "pooling_mode": ["cls", "mean"], "include_prompt": False}
    sbc = json.loads((out / "sentence_bert_config.json").read_text())
    assert "max_seq_length" not in sbc and sbc["transformer_task"] == "feature-extraction"
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 40
    ref2, again = _ref(out), encoderkit.load(out)
    assert ref2.max_seq_length == 40 and again.max_length == 40
    want = ref.encode(texts)
    _check(ref2.encode(texts), want)
    _check(again.encode(texts), want)
    _check(again.encode_query(texts), ref.encode_query(texts))
    # the backbone loads in transformers with the same hidden states
    hf = transformers.AutoModel.from_pretrained(out).eval()
    ids = torch.tensor([[2, 20, 30, 40, 3], [2, 50, 3, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        b = again.model(input_ids=ids, attention_mask=mask)
    b = b.last_hidden_state if hasattr(b, "last_hidden_state") else b
    assert (a - b)[mask.bool()].abs().max() <= 1e-5


# ------------------------------------------------------------------ devices, server helper, errors
def test_devices(bert_dir, tmp_path):
    folder = st_folder(bert_dir, tmp_path / "st", pooling="mean", layout="current")
    enc = encoderkit.load(folder, device="cpu")
    assert enc.device.type == "cpu"
    want = enc.encode(TEXTS)
    for dev in ("cuda", "cuda:0", "mps"):
        if dev.startswith("cuda") and torch.cuda.is_available() or dev == "mps" and torch.backends.mps.is_available():
            _check(encoderkit.load(folder, device=dev).encode(TEXTS), want, tol=1e-4)
            continue
        with pytest.raises(ValueError) as e:
            encoderkit.load(folder, device=dev)
        assert repr(dev) in str(e.value) and "not available" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="unknown device 'gpu7'"):
        encoderkit.load(folder, device="gpu7")


def test_server_pools_as_encode(bert_dir, tmp_path):
    """The server's batched path gives Encoder.encode's vectors: several pooling modes, a Dense head, and the
    prompt left out of pooling (include_prompt = false) when a request names a prompt."""
    httpx = pytest.importorskip("httpx")
    from encoderkit.serve.app import create_app
    from encoderkit.serve.models import EmbeddingModel, ModelRegistry
    from encoderkit.serve.state import ServeConfig
    from encoderkit.serve.testing import LiveServer

    dense = [{"in_features": 64, "out_features": 16, "bias": True, "activation_function": torch.nn.Tanh()}]
    folder = st_folder(bert_dir, tmp_path / "st", pooling=("max", "mean"), dense=dense, normalize=False,
                       prompts=PROMPTS, layout="current")
    _edit(folder / "1_Pooling" / "config.json", include_prompt=False)
    enc = encoderkit.load(folder)
    cfg, reg = ServeConfig(), ModelRegistry()
    reg.add(EmbeddingModel("m", enc, cfg.limits))
    with LiveServer(create_app(cfg, registry=reg)) as srv:
        for kw in ({}, {"prompt_name": "query"}):
            r = httpx.post(srv.url + "/embed", json={"inputs": TEXTS, "normalize": False, **kw})
            assert r.status_code == 200, r.text
            _check(np.array(r.json(), dtype=np.float32), enc.encode(TEXTS, **kw))


def test_unknown_module_type_is_one_line(bert_dir, tmp_path):
    folder = st_folder(bert_dir, tmp_path / "st", pooling="mean", layout="old")
    mods = json.loads((folder / "modules.json").read_text())
    mods.insert(1, {"idx": 1, "name": "1", "path": "1_LSTM", "type": "sentence_transformers.models.LSTM"})
    for i, m in enumerate(mods):
        m["idx"] = i
    (folder / "modules.json").write_text(json.dumps(mods))
    with pytest.raises(CheckpointError) as e:
        encoderkit.load(folder)
    msg = str(e.value)
    assert "\n" not in msg and "sentence_transformers.models.LSTM" in msg and "Transformer, Pooling, Dense" in msg


@pytest.mark.parametrize("model_type,auto_map", [
    ("jina_bert", {"AutoConfig": "jinaai/jina-bert-implementation--configuration_bert.JinaBertConfig",
                   "AutoModel": "jinaai/jina-bert-implementation--modeling_bert.JinaBertModel"}),
    ("new", {"AutoConfig": "Alibaba-NLP/new-impl--configuration.NewConfig",
             "AutoModel": "Alibaba-NLP/new-impl--modeling.NewModel"}),
])
def test_custom_code_architecture_error(bert_dir, tmp_path, model_type, auto_map):
    folder = st_folder(bert_dir, tmp_path / "st", pooling="mean", layout="current")
    _edit(folder / "config.json", model_type=model_type, auto_map=auto_map)
    with pytest.raises(CheckpointError) as e:
        encoderkit.load(folder)
    msg = str(e.value)
    assert "\n" not in msg and repr(model_type) in msg and "custom code shipped with the checkpoint" in msg
    assert "not an architecture in transformers" in msg and "bert" in msg.split("families that load:")[1]
    _edit(folder / "config.json", auto_map=None)
    with pytest.raises(CheckpointError, match="unsupported model_type"):  # no auto_map: the plain message
        encoderkit.load(folder)
