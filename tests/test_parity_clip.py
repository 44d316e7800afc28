"""Parity of the image-text dual encoders CLIP and SigLIP: tiny random checkpoints written by `transformers`
give the same text features, image features and logits (max abs diff <= 1e-5, fp32), and the Encoder towers
(`encoderkit.load(folder, modality=...)`) give the reference's embeddings from raw PIL images."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import encoderkit

transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL.Image")

TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, vocab_size=99)
VISION = dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40, image_size=32, patch_size=8)


def _perturb(model):
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n or "layrnorm" in n or "logit" in n or "probe" in n:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def _make(kind: str, folder, eos: int = 98):
    torch.manual_seed(0)
    if kind == "clip":
        cfg = transformers.CLIPConfig(text_config={**TEXT, "eos_token_id": eos, "max_position_embeddings": 20},
                                      vision_config=VISION, projection_dim=16)
        ref = transformers.CLIPModel(cfg)
        proc = transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    else:
        cfg = transformers.SiglipConfig(text_config={**TEXT, "max_position_embeddings": 12, "projection_size": 24},
                                        vision_config=VISION)
        ref = transformers.SiglipModel(cfg)
        proc = transformers.SiglipImageProcessorPil(size={"height": 32, "width": 32})
    _perturb(ref)
    ref.eval().save_pretrained(folder)
    proc.save_pretrained(folder)
    return ref, proc


def _text_batch(eos: int, T: int = 9):
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(3, 90, (3, T), generator=g)
    mask = torch.ones_like(ids)
    for row, n in enumerate((T, 6, 3)):
        ids[row, n - 1] = eos
        ids[row, n:] = 1
        mask[row, n:] = 0
    return ids, mask


def _images():
    rng = np.random.default_rng(0)
    rgb = PIL.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    tall = PIL.fromarray(rng.integers(0, 256, (70, 33, 3), dtype=np.uint8))
    return [rgb, tall]


@pytest.mark.parametrize("eos", [98, 2])  # 2: legacy configs pool at the largest token id
def test_clip_features_and_logits_match(tmp_path, eos):
    ref, _ = _make("clip", tmp_path, eos)
    from encoderkit.checkpoints.loader import load_folder

    ours = load_folder(tmp_path).model
    ids, mask = _text_batch(eos if eos != 2 else 95)
    if eos == 2:
        ids[ids == 95] = 97  # the eos position must hold the largest id of its row for the legacy rule
    px = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = ref(input_ids=ids, attention_mask=mask, pixel_values=px)
        t_ref, i_ref = out.text_embeds, out.image_embeds  # normalized
        t = ours.get_text_features(ids, mask)
        i = ours.get_image_features(px)
        logits = ours(ids, px, mask)
    assert (torch.nn.functional.normalize(t, dim=-1) - t_ref).abs().max().item() <= 1e-5
    assert (torch.nn.functional.normalize(i, dim=-1) - i_ref).abs().max().item() <= 1e-5
    assert (logits - out.logits_per_image).abs().max().item() <= 1e-4  # logits are scaled by exp(s) ~ 14
    assert abs(ours.logit_scale.item() - ref.logit_scale.item()) < 1e-7


def test_siglip_features_and_logits_match(tmp_path):
    ref, _ = _make("siglip", tmp_path)
    from encoderkit.checkpoints.loader import load_folder

    ours = load_folder(tmp_path).model
    ids = torch.randint(3, 90, (3, 12), generator=torch.Generator().manual_seed(2))
    ids[1, 7:] = 1  # padded to max length with the pad id, as SigLIP is used
    px = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = ref(input_ids=ids, pixel_values=px)
        t_raw = ref.get_text_features(input_ids=ids)
        i_raw = ref.get_image_features(pixel_values=px)
        t_raw = getattr(t_raw, "pooler_output", t_raw)
        i_raw = getattr(i_raw, "pooler_output", i_raw)
        t, i = ours.get_text_features(ids), ours.get_image_features(px)
        logits = ours(ids, px)
    assert (t - t_raw).abs().max().item() <= 1e-5
    assert (i - i_raw).abs().max().item() <= 1e-5
    assert (logits - out.logits_per_image).abs().max().item() <= 1e-4


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_encoder_image_tower_from_pil_images(tmp_path, kind):
    ref, proc = _make(kind, tmp_path)
    enc = encoderkit.load(tmp_path, modality="image")
    assert enc.modality == "image" and enc.dim == (16 if kind == "clip" else 24)
    imgs = _images()
    got = enc.encode(imgs)
    with torch.no_grad():
        px = proc(images=imgs, return_tensors="pt")["pixel_values"]
        want = ref.get_image_features(pixel_values=px)
        want = getattr(want, "pooler_output", want).numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5


def test_encoder_text_tower_pads_siglip_to_full_length(tmp_path):
    ref, _ = _make("siglip", tmp_path)
    enc = encoderkit.load(tmp_path)  # text tower by default
    ids = torch.randint(3, 90, (1, 5), generator=torch.Generator().manual_seed(7))
    got = enc.model(input_ids=ids, attention_mask=torch.ones_like(ids))
    full = torch.cat([ids, torch.ones(1, 7, dtype=torch.long)], dim=1)
    with torch.no_grad():
        want = ref.get_text_features(input_ids=full)
        want = getattr(want, "pooler_output", want)
    assert (got - want).abs().max().item() <= 1e-5


def test_wrong_tower_is_a_clear_error(tmp_path):
    _make("clip", tmp_path)
    with pytest.raises(ValueError, match="modality="):
        encoderkit.load(tmp_path, modality="audio")
