"""Parity: tiny random checkpoints written by `transformers` load into encoderkit and give the same last
hidden states (max abs diff <= 1e-5, fp32) on a padded batch."""
from __future__ import annotations

import pytest
import torch

import encoderkit
from encoderkit.checkpoints.weights import CheckpointError

transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=120, hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=80,
             max_position_embeddings=64)

CASES = {
    "bert": (transformers.BertConfig, transformers.BertModel, dict(type_vocab_size=2)),
    "minilm": (transformers.BertConfig, transformers.BertModel,  # MiniLM is a BERT config: small, deep, d_k = 8
               dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, num_hidden_layers=6)),
    "roberta": (transformers.RobertaConfig, transformers.RobertaModel, dict(pad_token_id=1, type_vocab_size=1)),
    "xlm-roberta": (transformers.XLMRobertaConfig, transformers.XLMRobertaModel, dict(pad_token_id=1, type_vocab_size=1)),
    "electra": (transformers.ElectraConfig, transformers.ElectraModel, dict(embedding_size=24)),
    "albert": (transformers.AlbertConfig, transformers.AlbertModel,
               dict(embedding_size=16, num_hidden_layers=4, num_hidden_groups=2, inner_group_num=2, hidden_act="gelu_new")),
    "distilbert": (transformers.DistilBertConfig, transformers.DistilBertModel,
                   dict(dim=48, n_layers=3, n_heads=4, hidden_dim=80, vocab_size=120, max_position_embeddings=64)),
}


def _make(name: str, tmp_path):
    cfg_cls, model_cls, extra = CASES[name]
    kw = dict(extra) if name == "distilbert" else {**SMALL, **extra}
    torch.manual_seed(0)
    ref = model_cls(cfg_cls(**kw)).eval()
    with torch.no_grad():  # non-trivial LayerNorm parameters so a mis-mapped LN cannot hide
        for n, p in ref.named_parameters():
            if "LayerNorm" in n or "layer_norm" in n:
                p.add_(torch.randn_like(p) * 0.1)
    ref.save_pretrained(tmp_path)
    return ref


def _batch(pad_id: int):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 120, (3, 17), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 11:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = pad_id
    return ids, mask


@pytest.mark.parametrize("name", list(CASES))
def test_last_hidden_state_matches_transformers(name, tmp_path):
    ref = _make(name, tmp_path)
    enc = encoderkit.load(tmp_path)  # backbone-only: no tokenizer in the folder
    assert enc.tokenizer is None
    pad_id = getattr(ref.config, "pad_token_id", 0) or 0
    ids, mask = _batch(pad_id)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        got = enc.model(input_ids=ids, attention_mask=mask)
    got = got.last_hidden_state if hasattr(got, "last_hidden_state") else got
    real = mask.bool()
    assert got.shape == want.shape
    assert (got[real] - want[real]).abs().max().item() <= 1e-5
    # unpadded rows agree at every position
    assert (got[0] - want[0]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", ["bert", "roberta", "albert", "distilbert", "electra"])
def test_save_round_trip_through_transformers(name, tmp_path):
    ref = _make(name, tmp_path / "src")
    enc = encoderkit.load(tmp_path / "src")
    enc.save(tmp_path / "out")
    again = transformers.AutoModel.from_pretrained(tmp_path / "out").eval()
    ids, mask = _batch(getattr(ref.config, "pad_token_id", 0) or 0)
    with torch.no_grad():
        a = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        b = again(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (a - b)[mask.bool()].abs().max().item() <= 1e-6


def test_task_checkpoint_prefix_is_found(tmp_path):
    """A BertForMaskedLM file stores the encoder under 'bert.'; the loader finds it and skips the head."""
    torch.manual_seed(0)
    ref = transformers.BertForMaskedLM(transformers.BertConfig(**SMALL)).eval()
    ref.save_pretrained(tmp_path)
    enc = encoderkit.load(tmp_path)
    ids, mask = _batch(0)
    with torch.no_grad():
        want = ref.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        got = enc.model(input_ids=ids, attention_mask=mask)
    assert (got - want)[mask.bool()].abs().max().item() <= 1e-5


def test_unknown_model_type_lists_supported(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "mamba-9000"}')
    with pytest.raises(CheckpointError) as e:
        encoderkit.load(tmp_path)
    msg = str(e.value)
    assert "mamba-9000" in msg and "bert" in msg and "distilbert" in msg


def test_shape_mismatch_names_file_and_tensor(tmp_path):
    _make("bert", tmp_path)
    import json

    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["intermediate_size"] = 81
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as e:
        encoderkit.load(tmp_path)
    assert "model.safetensors" in str(e.value) and "intermediate.dense.weight" in str(e.value)
    assert "(81, 48)" in str(e.value)


def test_missing_tensor_names_it(tmp_path):
    _make("bert", tmp_path)
    from safetensors.torch import load_file, save_file

    st = load_file(str(tmp_path / "model.safetensors"))
    del st["encoder.layer.1.attention.self.key.bias"]
    save_file(st, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"encoder\.layer\.1\.attention\.self\.key\.bias.*missing"):
        encoderkit.load(tmp_path)


def test_corrupt_and_missing_weights_files(tmp_path):
    _make("bert", tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        encoderkit.load(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        encoderkit.load(tmp_path)


def test_pickle_checkpoint_loads_only_with_weights_only(tmp_path):
    """pytorch_model.bin is read with weights_only=True: plain tensors load, a pickle carrying code is refused."""
    ref = _make("bert", tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    enc = encoderkit.load(tmp_path)
    ids, mask = _batch(0)
    with torch.no_grad():
        assert (enc.model(input_ids=ids, attention_mask=mask) - ref(input_ids=ids, attention_mask=mask).last_hidden_state)[
            mask.bool()].abs().max() <= 1e-5

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        encoderkit.load(tmp_path)
