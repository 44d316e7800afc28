"""Parity of the image backbones (ViT, Swin, ResNet): tiny random checkpoints written by `transformers` load
into encoderkit and give the same outputs (max abs diff <= 1e-5, fp32), preprocessing included."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import encoderkit
from encoderkit.checkpoints.weights import CheckpointError

transformers = pytest.importorskip("transformers")


def _perturb_norms(model: torch.nn.Module) -> None:
    """Non-trivial norm parameters / BN statistics so a mis-mapped norm cannot hide."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in ("norm", "layernorm", "LayerNorm", "normalization", "relative_position_bias_table",
                                       "position_embeddings")):
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.add_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.mul_(1 + torch.rand(b.shape, generator=g))


def _pixels(n: int, size: int) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _save(ref, folder):
    torch.manual_seed(0)
    _perturb_norms(ref)
    ref.eval().save_pretrained(folder)
    return ref


def test_vit_matches_transformers(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                                 image_size=32, patch_size=8)
    ref = _save(transformers.ViTModel(cfg), tmp_path)
    enc = encoderkit.load(tmp_path)
    x = _pixels(3, 32)
    with torch.no_grad():
        want = ref(pixel_values=x).last_hidden_state
        got = enc.model(pixel_values=x)
    assert got.shape == want.shape == (3, 17, 32)
    assert (got - want).abs().max().item() <= 1e-5


def test_swin_matches_transformers(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                                  window_size=4)  # stage 1: 8x8 grid, shifted 4x4 windows; stage 2: 4x4 = one window
    ref = _save(transformers.SwinModel(cfg), tmp_path)
    enc = encoderkit.load(tmp_path)
    x = _pixels(2, 32)
    with torch.no_grad():
        out = ref(pixel_values=x)
        got = enc.model(pixel_values=x)
    assert got.shape == out.last_hidden_state.shape == (2, 16, 32)
    assert (got - out.last_hidden_state).abs().max().item() <= 1e-5
    assert (got.mean(1) - out.pooler_output).abs().max().item() <= 1e-5


def test_swin_odd_grid_pads_like_transformers(tmp_path):
    """A 9x9 grid with window 4: windows need padding, the merge pads the odd size, stage 2 (5x5) pads again."""
    torch.manual_seed(0)
    cfg = transformers.SwinConfig(image_size=36, patch_size=4, embed_dim=8, depths=[2, 2], num_heads=[2, 2],
                                  window_size=4)
    ref = _save(transformers.SwinModel(cfg), tmp_path)
    enc = encoderkit.load(tmp_path)
    x = _pixels(1, 36)
    with torch.no_grad():
        want = ref(pixel_values=x).last_hidden_state
        got = enc.model(pixel_values=x)
    assert (got - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("layer_type", ["basic", "bottleneck"])
def test_resnet_matches_transformers(tmp_path, layer_type):
    torch.manual_seed(0)
    cfg = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[16, 32, 32], depths=[2, 1, 1], layer_type=layer_type,
                                    downsample_in_bottleneck=layer_type == "bottleneck")
    ref = _save(transformers.ResNetModel(cfg), tmp_path)
    enc = encoderkit.load(tmp_path)
    x = _pixels(2, 64)
    with torch.no_grad():
        out = ref(pixel_values=x)
        feats = enc.model.features(x)
        tokens = enc.model(pixel_values=x)  # the backbone contract: hidden states, the final map's positions
    assert (feats - out.last_hidden_state).abs().max().item() <= 1e-5
    assert tokens.shape == (2, 16, 32)  # 64 px / 16 (stem 4, two strided stages) = 4x4 positions
    assert (tokens - out.last_hidden_state.flatten(2).transpose(1, 2)).abs().max().item() <= 1e-5
    # the Encoder's mean pooling is the global average pool: encode(images) = pooler_output, preprocessing included
    images = list(np.random.default_rng(0).integers(0, 256, (3, 40, 56, 3), dtype=np.uint8))
    pixels = enc.processor.collate(enc.processor.prepare(images))["pixel_values"]
    with torch.no_grad():
        want = ref(pixel_values=pixels).pooler_output.flatten(1).numpy()
    got = enc.encode(images, batch_size=2)
    assert enc.pooling == "mean" and got.shape == want.shape == (3, 32)
    assert np.abs(got - want).max() <= 1e-5
