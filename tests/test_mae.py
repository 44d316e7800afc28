"""ViT masked autoencoder: patchify, masking, the encoder sees only visible patches, loss on masked ones."""
from __future__ import annotations

import pytest
import torch

from encoderkit.models.mae import MAE, MAEConfig, patchify, random_masking, unpatchify
from encoderkit.nn.layers import EncoderLayer


def _small(**kw) -> MAE:
    torch.manual_seed(0)
    return MAE(MAEConfig(image_size=8, patch_size=2, d_model=16, depth=2, n_heads=2, dec_d_model=8, dec_depth=1,
                         dec_n_heads=2, **kw))


def test_patchify_roundtrip_and_layout():
    x = torch.randn(2, 3, 8, 8)
    p = patchify(x, 4)
    assert p.shape == (2, 4, 48)
    # patch 1 is the top-right 4x4 block, flattened as (row, col, channel)
    assert torch.equal(p[0, 1], x[0, :, 0:4, 4:8].permute(1, 2, 0).reshape(-1))
    assert torch.equal(unpatchify(p, 4, 3), x)


def test_random_masking_hides_75_percent_per_image():
    torch.manual_seed(0)
    ids_keep, mask, ids_restore = random_masking(5, 16, 0.75)
    assert ids_keep.shape == (5, 4)
    assert torch.all(mask.sum(1) == 12)
    for b in range(5):
        assert torch.all(mask[b, ids_keep[b]] == 0)  # kept positions are the unmasked ones
        assert len(set(ids_keep[b].tolist())) == 4
    assert not torch.equal(ids_keep[0].sort().values, ids_keep[1].sort().values)  # different per image
    shuffled = torch.argsort(ids_restore, dim=1)
    assert torch.equal(torch.gather(shuffled, 1, ids_restore), torch.arange(16).expand(5, 16))


def test_encoder_sees_only_visible_patches():
    m = _small()
    x = torch.rand(3, 1, 8, 8)
    torch.manual_seed(5)
    latent, mask, _ = m.forward_encoder(x)
    assert latent.shape == (3, 1 + 4, 16)  # [CLS] + 25% of 16 patches
    # change every masked pixel: with the same mask the encoder output must not move
    patches = patchify(x, 2)
    noisy = torch.where(mask[..., None].bool(), torch.rand_like(patches), patches)
    torch.manual_seed(5)
    latent2, mask2, _ = m.forward_encoder(unpatchify(noisy, 2, 1))
    assert torch.equal(mask, mask2)
    assert torch.allclose(latent, latent2, atol=1e-6)


def test_loss_is_mse_on_masked_patches_only():
    m = _small()
    x = torch.rand(2, 1, 8, 8)
    torch.manual_seed(7)
    loss, _ = m.loss(x)
    torch.manual_seed(7)
    latent, mask, ids_restore = m.forward_encoder(x)
    pred = m.forward_decoder(latent, ids_restore)
    assert pred.shape == (2, 16, 4)
    err = (pred - patchify(x, 2)).pow(2).mean(-1)
    assert loss.item() == pytest.approx((err[mask.bool()]).mean().item(), rel=1e-5)
    assert loss.item() != pytest.approx(err.mean().item(), rel=1e-3)


def test_norm_pix_loss_target_is_normalized_per_patch():
    m = _small(norm_pix_loss=True)
    t = m.target(torch.rand(2, 1, 8, 8))
    assert torch.allclose(t.mean(-1), torch.zeros(2, 16), atol=1e-4)
    assert torch.allclose(t.var(-1), torch.ones(2, 16), atol=1e-2)


def test_blocks_come_from_encoderkit_nn_and_features():
    m = _small()
    assert all(isinstance(layer, EncoderLayer) and layer.norm_first for layer in m.layers)
    x = torch.rand(3, 64)  # flat input is accepted
    assert m.encode(x).shape == (3, 16)
    assert _small(pool="tokens").encode(x).shape == (3, 16 * 16)
    assert m.reconstruct(x).shape == x.shape
    m.check_input(x)
    with pytest.raises(ValueError, match="float"):
        m.check_input(torch.zeros(3, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        m.check_input(torch.rand(3, 1, 9, 9))
    with pytest.raises(ValueError, match="divisible"):
        MAE(MAEConfig(image_size=28, patch_size=5))


def test_tokens_pooling_is_in_image_order():
    m = _small(pool="tokens")
    x = torch.rand(2, 1, 8, 8)
    latent, _, _ = m.forward_encoder(x, mask_ratio=0.0)
    torch.manual_seed(3)
    a = m.encode(x)
    torch.manual_seed(4)
    b = m.encode(x)  # a different (all-visible) shuffle gives the same ordered features
    assert torch.allclose(a, b, atol=1e-5)
