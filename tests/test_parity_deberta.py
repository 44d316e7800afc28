"""Parity of DeBERTa-v2 / v3 (disentangled attention, relative buckets): tiny random checkpoints written by
`transformers` give the same last hidden states on a padded batch (max abs diff <= 1e-5, fp32)."""
from __future__ import annotations

import pytest
import torch

import encoderkit

transformers = pytest.importorskip("transformers")

BASE = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            max_position_embeddings=64)
CASES = {
    # DeBERTa-v3: no absolute positions, 256-style log buckets (here 8 so that the 24-token batch uses them),
    # shared position keys, LayerNorm on the relative table
    "v3": dict(relative_attention=True, position_biased_input=False, pos_att_type=["p2c", "c2p"], position_buckets=8,
               max_relative_positions=32, share_att_key=True, norm_rel_ebd="layer_norm"),
    # DeBERTa-v2 xlarge style: separate position projections, convolution branch, absolute positions kept
    "v2-conv": dict(relative_attention=True, pos_att_type="p2c|c2p", max_relative_positions=16, conv_kernel_size=3,
                    share_att_key=False, type_vocab_size=2),
    "c2p-only": dict(relative_attention=True, pos_att_type=["c2p"], max_relative_positions=10, embedding_size=24),
    "absolute-only": dict(relative_attention=False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_deberta_v2_matches_transformers(name, tmp_path):
    torch.manual_seed(0)
    ref = transformers.DebertaV2Model(transformers.DebertaV2Config(**BASE, **CASES[name])).eval()
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if "LayerNorm" in n or "rel_embeddings" in n:
                p.add_(torch.randn_like(p) * 0.1)
    ref.save_pretrained(tmp_path)
    enc = encoderkit.load(tmp_path)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 120, (3, 24), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    mask[2, 5:] = 0
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        got = enc.model(input_ids=ids, attention_mask=mask)
    real = mask.bool()
    assert (got[real] - want[real]).abs().max().item() <= 1e-5
