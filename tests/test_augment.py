"""Image augmentations (pure torch): identity settings change nothing, crops sample the region they
claim, noise / jitter / erasing stay in range, seeded runs repeat, bad input is refused."""
from __future__ import annotations

import pytest
import torch

from encoderkit.datasets.augment import (
    MultiCropAugment,
    SimCLRAugment,
    contrast_jitter,
    gaussian_blur,
    gaussian_noise,
    random_affine,
    random_crop_matrices,
    random_erasing,
    random_resized_crop,
)


def _imgs(n=6, seed=0):
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_identity_settings_return_the_input():
    x = _imgs()
    torch.testing.assert_close(random_resized_crop(x, 16, scale=(1, 1), ratio=(1, 1)), x)
    torch.testing.assert_close(random_affine(x, degrees=0, translate=0, scale=(1, 1)), x)
    torch.testing.assert_close(gaussian_blur(x, p=0.0), x)
    torch.testing.assert_close(contrast_jitter(x, 0.0, 0.0), x)
    torch.testing.assert_close(random_erasing(x, p=0.0), x)


def test_crop_samples_inside_its_region():
    # pixel value = its column in [0, 1); a crop of width fraction sx centred at cx only sees columns there
    col = (torch.arange(64, dtype=torch.float32) + 0.5) / 64
    x = col.expand(64, 64).repeat(8, 1, 1, 1)  # (8, 1, 64, 64)
    g = torch.Generator().manual_seed(1)
    m = random_crop_matrices(8, scale=(0.2, 0.3), ratio=(1, 1), generator=torch.Generator().manual_seed(1))
    out = random_resized_crop(x, 32, scale=(0.2, 0.3), ratio=(1, 1), generator=g)
    for i in range(8):
        sx, cx = m[i, 0, 0].item(), m[i, 0, 2].item()
        lo, hi = (cx - sx + 1) / 2, (cx + sx + 1) / 2  # normalized [-1, 1] -> [0, 1]
        assert out[i].min() >= lo - 0.02 and out[i].max() <= hi + 0.02
        assert sx == pytest.approx(torch.sqrt(torch.tensor(0.2)).item(), abs=0.1)


def test_ranges_shapes_and_seeding():
    x = _imgs()
    for f in (lambda a, g: gaussian_noise(a, 0.3, generator=g), lambda a, g: contrast_jitter(a, 0.5, 0.5, generator=g)):
        y = f(x, torch.Generator().manual_seed(0))
        assert y.min() >= 0 and y.max() <= 1 and y.shape == x.shape
    erased = random_erasing(x, p=1.0, scale=(0.1, 0.1), generator=torch.Generator().manual_seed(0))
    zeros = (erased == 0).flatten(1).sum(1).float() / 256
    assert bool(((zeros > 0.05) & (zeros < 0.2)).all())
    aug = SimCLRAugment(size=16)
    a = aug.two_views(x, torch.Generator().manual_seed(3))
    b = aug.two_views(x, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a[0], b[0])
    assert not torch.equal(a[0], a[1])  # two different views
    crops = MultiCropAugment(global_size=16, local_size=8, n_global=2, n_local=3)(x, torch.Generator().manual_seed(0))
    assert [tuple(c.shape) for c in crops] == [(6, 1, 16, 16)] * 2 + [(6, 1, 8, 8)] * 3
    assert random_resized_crop(x[:, 0], 10).shape == (6, 10, 10)  # (B, H, W) works too


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="B, C, H, W"):
        random_affine(torch.rand(16, 16))
    with pytest.raises(TypeError, match="float images"):
        random_resized_crop(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), 8)
