"""Image augmentations for self-supervised learning (SimCLR, DINO), batched, in pure torch on
(B, C, H, W) float tensors (a (B, H, W) batch is treated as one channel).

Geometric ones are one affine warp per image: output pixel u in [-1, 1]^2 samples the input at
A u + t, with A = R(angle) diag(scale_x, scale_y) and t the crop centre (bilinear, zero padding).
Every function takes an optional torch.Generator so a run is reproducible."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _as_4d(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if x.dim() == 3:
        return x.unsqueeze(1), True
    if x.dim() != 4:
        raise ValueError(f"augmentations take images as (B, C, H, W) or (B, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"augmentations need float images (scale uint8 to [0, 1] first), got dtype {x.dtype}")
    return x, False


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def affine_warp(x: torch.Tensor, matrix: torch.Tensor, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Warp each image by its (B, 2, 3) matrix in normalized coordinates, to `size` (default: same size)."""
    x4, squeeze = _as_4d(x)
    B, C, H, W = x4.shape
    oh, ow = (size, size) if isinstance(size, int) else (size or (H, W))
    grid = F.affine_grid(matrix.to(x4.dtype), [B, C, oh, ow], align_corners=False)  # (B, oh, ow, 2)
    out = F.grid_sample(x4, grid.to(x4.device), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.squeeze(1) if squeeze else out


def random_crop_matrices(n: int, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                         degrees: float = 0.0, translate: float = 0.0,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, 2, 3) matrices for a random resized crop (area fraction in `scale`, log-uniform aspect ratio
    in `ratio`, centre uniform where the crop fits), rotated by U(-degrees, degrees) and shifted by
    U(-translate, translate) of the image size."""
    area = _uniform(n, scale[0], scale[1], generator)
    log_r = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), generator)
    r = log_r.exp()
    sx = (area * r).sqrt().clamp(max=1.0)  # crop width / image width
    sy = (area / r).sqrt().clamp(max=1.0)
    cx = (1 - sx) * (2 * torch.rand(n, generator=generator) - 1)  # centre keeps the crop inside
    cy = (1 - sy) * (2 * torch.rand(n, generator=generator) - 1)
    cx = cx + 2 * translate * (2 * torch.rand(n, generator=generator) - 1)
    cy = cy + 2 * translate * (2 * torch.rand(n, generator=generator) - 1)
    a = _uniform(n, -degrees, degrees, generator) * math.pi / 180
    cos, sin = a.cos(), a.sin()
    m = torch.empty(n, 2, 3)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = cos * sx, -sin * sy, cx
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = sin * sx, cos * sy, cy
    return m


def random_resized_crop(x: torch.Tensor, size: int, scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), degrees: float = 0.0, translate: float = 0.0,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Crop a random region of each image (optionally rotated / shifted) and resize it to size x size."""
    x4, squeeze = _as_4d(x)
    m = random_crop_matrices(x4.shape[0], scale, ratio, degrees, translate, generator)
    out = affine_warp(x4, m, size)
    return out.squeeze(1) if squeeze else out


def random_affine(x: torch.Tensor, degrees: float = 15.0, translate: float = 0.1, scale: tuple[float, float] = (0.9, 1.1),
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Small rotation, translation and zoom of each image, same output size."""
    x4, squeeze = _as_4d(x)
    n = x4.shape[0]
    z = 1.0 / _uniform(n, scale[0], scale[1], generator)  # zoom in by s = sample the input on a 1/s grid
    a = _uniform(n, -degrees, degrees, generator) * math.pi / 180
    t = 2 * translate * (2 * torch.rand(n, 2, generator=generator) - 1)
    m = torch.empty(n, 2, 3)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = a.cos() * z, -a.sin() * z, t[:, 0]
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = a.sin() * z, a.cos() * z, t[:, 1]
    out = affine_warp(x4, m)
    return out.squeeze(1) if squeeze else out


def gaussian_noise(x: torch.Tensor, std: float = 0.1, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + N(0, std^2), clipped to [0, 1]."""
    _as_4d(x)
    return (x + std * torch.randn(x.shape, generator=generator).to(x)).clamp(0.0, 1.0)


def gaussian_blur(x: torch.Tensor, sigma: tuple[float, float] = (0.1, 1.0), p: float = 0.5,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability p per image, a separable Gaussian blur with sigma ~ U(sigma)."""
    x4, squeeze = _as_4d(x)
    B, C, H, W = x4.shape
    s = _uniform(B, sigma[0], sigma[1], generator)
    apply = torch.rand(B, generator=generator) < p
    radius = max(1, int(math.ceil(2 * sigma[1])))
    offs = torch.arange(-radius, radius + 1, dtype=x4.dtype)
    k = torch.exp(-offs[None, :] ** 2 / (2 * s[:, None].to(x4.dtype) ** 2))
    k = k / k.sum(dim=1, keepdim=True)  # (B, 2r+1)
    k = torch.where(apply[:, None], k, (offs == 0).to(x4.dtype)[None, :])  # identity kernel when not applied
    y = x4.reshape(1, B * C, H, W)
    kc = k.repeat_interleave(C, dim=0)  # (B*C, 2r+1)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), kc[:, None, None, :], groups=B * C)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), kc[:, None, :, None], groups=B * C)
    out = y.reshape(B, C, H, W)
    return out.squeeze(1) if squeeze else out


def contrast_jitter(x: torch.Tensor, brightness: float = 0.2, contrast: float = 0.2,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Per image: x' = (x - mean) * c + mean + b, c ~ U(1 -/+ contrast), b ~ U(-/+ brightness), clipped to [0, 1]."""
    x4, squeeze = _as_4d(x)
    B = x4.shape[0]
    c = _uniform(B, 1 - contrast, 1 + contrast, generator).to(x4)[:, None, None, None]
    b = _uniform(B, -brightness, brightness, generator).to(x4)[:, None, None, None]
    mean = x4.mean(dim=(1, 2, 3), keepdim=True)
    out = ((x4 - mean) * c + mean + b).clamp(0.0, 1.0)
    return out.squeeze(1) if squeeze else out


def random_erasing(x: torch.Tensor, p: float = 0.5, scale: tuple[float, float] = (0.02, 0.15),
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability p per image, zero a random axis-aligned rectangle covering `scale` of the area."""
    x4, squeeze = _as_4d(x)
    B, C, H, W = x4.shape
    area = _uniform(B, scale[0], scale[1], generator)
    h = (area.sqrt() * H).round().clamp(1, H).long()
    w = (area.sqrt() * W).round().clamp(1, W).long()
    top = (torch.rand(B, generator=generator) * (H - h + 1)).long()
    left = (torch.rand(B, generator=generator) * (W - w + 1)).long()
    apply = torch.rand(B, generator=generator) < p
    rows = torch.arange(H)[None, :]
    cols = torch.arange(W)[None, :]
    in_r = (rows >= top[:, None]) & (rows < (top + h)[:, None])  # (B, H)
    in_c = (cols >= left[:, None]) & (cols < (left + w)[:, None])  # (B, W)
    hole = (in_r[:, :, None] & in_c[:, None, :] & apply[:, None, None]).to(x4.device)  # (B, H, W)
    out = x4.masked_fill(hole[:, None], 0.0)
    return out.squeeze(1) if squeeze else out


@dataclass
class SimCLRAugment:
    """One random view for SimCLR on small grey images: resized crop + rotation, contrast, blur, noise."""

    size: int = 28  # output side
    scale: tuple[float, float] = (0.35, 1.0)  # crop area fraction
    degrees: float = 15.0  # max rotation
    brightness: float = 0.2
    contrast: float = 0.3
    blur_p: float = 0.3
    noise_std: float = 0.05
    erase_p: float = 0.25

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        v = random_resized_crop(x, self.size, self.scale, degrees=self.degrees, generator=generator)
        v = contrast_jitter(v, self.brightness, self.contrast, generator=generator)
        v = gaussian_blur(v, p=self.blur_p, generator=generator)
        v = random_erasing(v, p=self.erase_p, generator=generator)
        return gaussian_noise(v, self.noise_std, generator=generator)

    def two_views(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The SimCLR pair: two independent augmentations of the same batch."""
        return self(x, generator), self(x, generator)


@dataclass
class MultiCropAugment:
    """DINO's multi-crop: n_global large crops (covering global_scale of the image) at global_size and
    n_local small ones (local_scale) at local_size; each also jittered, blurred and noised."""

    global_size: int = 28
    local_size: int = 14
    n_global: int = 2
    n_local: int = 4
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.1, 0.4)
    degrees: float = 15.0
    contrast: float = 0.3
    blur_p: float = 0.3
    noise_std: float = 0.05

    def _view(self, x: torch.Tensor, size: int, scale: tuple[float, float], g: torch.Generator | None) -> torch.Tensor:
        v = random_resized_crop(x, size, scale, degrees=self.degrees, generator=g)
        v = contrast_jitter(v, 0.2, self.contrast, generator=g)
        v = gaussian_blur(v, p=self.blur_p, generator=g)
        return gaussian_noise(v, self.noise_std, generator=g)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        crops = [self._view(x, self.global_size, self.global_scale, generator) for _ in range(self.n_global)]
        crops += [self._view(x, self.local_size, self.local_scale, generator) for _ in range(self.n_local)]
        return crops
